//! The names of every variable a launcher sets for a rank, in one place:
//! those `hpcomm run` writes (and the runtime reads back), and those of the
//! other launchers the runtime recognises.

/// Set by `hpcomm run` for each rank it starts.
pub mod hpcomm {
    /// This rank.
    pub const RANK: &str = "HPCOMM_RANK";
    /// The job's size.
    pub const SIZE: &str = "HPCOMM_SIZE";
    /// The launcher's key-value server, `host:port`.
    pub const KVS: &str = "HPCOMM_KVS";
    /// The job's secret (ranks on the launcher's host).
    pub const SECRET: &str = "HPCOMM_SECRET";
    /// `0`: the secret is the first line of standard input instead (ranks
    /// on other hosts).
    pub const SECRET_FD: &str = "HPCOMM_SECRET_FD";
    /// The job's identifier.
    pub const JOB: &str = "HPCOMM_JOB";
    /// The transport: `auto`, `shm`, `tcp` or `ofi`.
    pub const TRANSPORT: &str = "HPCOMM_TRANSPORT";
    /// The launcher's pid: a rank ends when the launcher does.
    pub const LAUNCHER_PID: &str = "HPCOMM_LAUNCHER_PID";
    /// The rank's node, when the launcher knows it (`hpcomm run --batch`:
    /// the Batch node index). Also a user setting.
    pub const NODE: &str = "HPCOMM_NODE";
    /// Forces a bootstrap by name (a user setting).
    pub const BOOTSTRAP: &str = "HPCOMM_BOOTSTRAP";
    /// The secret of an AWS Batch job, set in its job definition.
    pub const BATCH_SECRET: &str = "HPCOMM_BATCH_SECRET";
}

/// PMI-1 and PMI-2 (MPICH's Hydra `mpiexec`, Slurm's `srun --mpi=pmi2`).
pub mod pmi {
    /// An inherited descriptor connected to the PMI server.
    pub const FD: &str = "PMI_FD";
    /// `host:port` of the PMI server, when there is no `PMI_FD`.
    pub const PORT: &str = "PMI_PORT";
    /// This process's id for the server, with `PMI_PORT`.
    pub const ID: &str = "PMI_ID";
    /// This rank.
    pub const RANK: &str = "PMI_RANK";
    /// The job's size.
    pub const SIZE: &str = "PMI_SIZE";
    /// The job's id (Slurm).
    pub const JOBID: &str = "PMI_JOBID";
}

/// PMIx (Open MPI's `mpirun`/`prterun`, Slurm's `srun --mpi=pmix`).
pub mod pmix {
    /// The namespace of the job.
    pub const NAMESPACE: &str = "PMIX_NAMESPACE";
    /// This rank.
    pub const RANK: &str = "PMIX_RANK";
    /// The path of the PMIx client library to load, if not the default
    /// (a user setting).
    pub const LIBRARY: &str = "HPCOMM_PMIX_LIBRARY";
}

/// Slurm's task environment.
pub mod slurm {
    /// The job.
    pub const JOB_ID: &str = "SLURM_JOB_ID";
    /// The step: set in tasks that `srun` started.
    pub const STEP_ID: &str = "SLURM_STEP_ID";
    /// The step's tasks.
    pub const STEP_NUM_TASKS: &str = "SLURM_STEP_NUM_TASKS";
    /// This task.
    pub const PROCID: &str = "SLURM_PROCID";
}

/// Open MPI's `mpirun` (besides PMIx).
pub mod ompi {
    /// The job's size.
    pub const WORLD_SIZE: &str = "OMPI_COMM_WORLD_SIZE";
}

/// AWS Batch multi-node parallel jobs.
pub mod batch {
    /// This node's index in the job.
    pub const NODE_INDEX: &str = "AWS_BATCH_JOB_NODE_INDEX";
    /// Nodes in the job.
    pub const NUM_NODES: &str = "AWS_BATCH_JOB_NUM_NODES";
    /// The main node's index.
    pub const MAIN_NODE_INDEX: &str = "AWS_BATCH_JOB_MAIN_NODE_INDEX";
    /// The main node's private address (set on the other nodes only).
    pub const MAIN_NODE_ADDRESS: &str = "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS";
}
