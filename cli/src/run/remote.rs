//! How `hpcomm run` starts a rank on another host: the command line built
//! from the `--exec` template, and the checks on host names. Pure functions,
//! unit-tested.
//!
//! Two rules keep a job on a shared cluster safe:
//! - **No secret in a command line.** Every local user can read every
//!   process's arguments (`/proc/*/cmdline`, `ps`) for as long as it runs,
//!   on both hosts. The remote rank gets `HPCOMM_SECRET_FD=0` instead and
//!   reads the secret as the first line of its standard input, which the
//!   launcher writes into the pipe that the remote-exec command (ssh)
//!   forwards.
//! - **Every word arrives as it was given.** ssh and rsh join their
//!   arguments with spaces and hand the result to the remote user's shell,
//!   which would re-parse `'a b'` as two words and run `$(id)`: for them
//!   each word is quoted for that shell. Other templates (`ip netns exec
//!   {host}`, `srun -w {host}`) execute their arguments directly, and get
//!   the words unchanged. A host name that is not a host name (`-oProxy…`
//!   would be an ssh option) is refused before anything starts.

/// Whether `host` is a plain host name or address: letters, digits and
/// `.-_:%@` (IPv6, zone ids, `user@host`), not starting with `-`, at most
/// 255 bytes.
pub fn check_host(host: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || ".-_:%@".contains(c);
    if host.is_empty() || host.len() > 255 || host.starts_with('-') || !host.chars().all(plain) {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok(())
}

/// `word` quoted for a POSIX shell: in single quotes, each `'` written as
/// `'\''`.
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The command line that starts `program` on `host` through `template`
/// (whose `{host}` is replaced), with the environment `vars`: the
/// template's words, then `env`, the variables and the program's words —
/// each quoted for the remote shell when the template's program is ssh or
/// rsh.
pub fn command(
    template: &str,
    host: &str,
    vars: &[(&str, String)],
    program: &[String],
) -> Result<Vec<String>, String> {
    check_host(host)?;
    let mut words: Vec<String> =
        template.split_whitespace().map(|w| w.replace("{host}", host)).collect();
    let Some(first) = words.first() else {
        return Err("the --exec template is empty".into());
    };
    let through_shell = matches!(
        std::path::Path::new(first).file_name().and_then(|n| n.to_str()),
        Some("ssh" | "rsh")
    );
    let rest = std::iter::once("env".to_string())
        .chain(vars.iter().map(|(k, v)| format!("{k}={v}")))
        .chain(program.iter().cloned());
    if through_shell {
        words.extend(rest.map(|w| shell_quote(&w)));
    } else {
        words.extend(rest);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_that_are_options_or_shell_are_refused() {
        for good in ["node1", "ip-10-0-0-1.ec2.internal", "10.0.0.1", "fe80::1%eth0", "me@node"] {
            assert!(check_host(good).is_ok(), "{good}");
        }
        for bad in ["", "-oProxyCommand=id", "a b", "a;id", "$(id)", "node\n", "a'b"] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn words_reach_a_remote_shell_unchanged() {
        let program = ["prog", "a b", "$(id)", "it's", ""].map(String::from);
        let vars = [("HPCOMM_RANK", "3".to_string())];
        let ssh = command("ssh -p 22 {host}", "node1", &vars, &program).unwrap();
        assert_eq!(
            ssh,
            ["ssh", "-p", "22", "node1", "env", "HPCOMM_RANK=3", "prog", "'a b'", "'$(id)'"]
                .into_iter()
                .map(String::from)
                .chain(["'it'\\''s'".to_string(), "''".to_string()])
                .collect::<Vec<_>>()
        );
        // What the remote shell makes of it: run it through sh here.
        let line = ssh[4..].join(" ");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("set -- {line}; shift 2; printf '%s|' \"$@\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "prog|a b|$(id)|it's||");
        // A template that executes its arguments gets them unchanged.
        let direct = command("ip netns exec {host}", "hpc1", &vars, &program).unwrap();
        assert_eq!(&direct[..5], ["ip", "netns", "exec", "hpc1", "env"]);
        assert_eq!(&direct[6..], &program[..]);
        assert!(command("ssh {host}", "-oProxyCommand=id", &vars, &program).is_err());
    }
}
