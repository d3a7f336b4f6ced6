/*
 * The C twin of `hpcomm bench`: the same benchmarks with the OSU
 * micro-benchmarks' method, called from C as HPC users measure MPI. It
 * runs the plan `hpcomm bench KIND --plan` prints (sizes, timed and
 * warm-up iterations), so that the two cannot drift: the plan lives only in
 * cli/src/plan.rs. Output as `hpcomm bench`'s: `# …` lines, then
 * `size value`.
 *
 *   hpcomm bench latency --min-size 0 --max-size 65536 --plan > plan
 *   mpicc.mpich -O2 -o osu-mpich benches/c-compare/osu.c
 *   mpirun.mpich -n 2 ./osu-mpich latency plan 64
 *
 * Method (as cli/src/bench.rs):
 * - latency: ping-pong, one-way latency is half the round trip (µs);
 * - bw, mr: rank 0 posts a window of non-blocking sends, rank 1 the same
 *   number of receives, both wait for all, rank 1 answers with 4 bytes;
 *   bytes (MB/s) or messages per second;
 * - bibw: both ranks send a window to each other at once (MB/s);
 * - allreduce, reduce (sums of float, size in bytes), bcast (from 0),
 *   allgather (size per rank), alltoall (size per pair), barrier: each
 *   iteration timed alone, a barrier between iterations, the ranks'
 *   average latencies averaged (µs);
 * - put-latency, get-latency, put-bw, get-bw: OSU's one-sided method
 *   (osu_put_latency, osu_get_latency, osu_put_bw, osu_get_bw with their
 *   default synchronisation): the even rank locks its partner's window
 *   (shared) and per iteration puts or gets one message (latency, µs per
 *   operation) or a window of messages at consecutive offsets (MB/s), then
 *   flushes; the partner waits in a barrier. A window per size, over a
 *   page-aligned buffer of size × window bytes, as hpcomm bench's;
 * - iallreduce, ireduce: OSU's overlap method (osu_iallreduce): the pure
 *   communication time (start, wait), then each start followed by that
 *   much computation (a busy loop without MPI calls, OSU's default) and
 *   the wait; four columns: overall, compute, pure communication (µs) and
 *   overlap (%), the ranks' averages averaged.
 * With more than 2 ranks (an even number) ranks pair up, 0 with 1, 2 with
 * 3, …, and rank 0 reports its pair.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG 1
#define ACK 2
#define MAX_SIZES 64

/* The kinds `hpcomm bench` has; cli/tests checks this list against it. */
static const char *const KINDS[] = {
    "latency", "bw", "bibw", "mr", "allreduce", "reduce",
    "bcast", "allgather", "alltoall", "barrier", "iallreduce", "ireduce",
    "put-latency", "get-latency", "put-bw", "get-bw",
};

struct step {
    long size, iters, skip;
};

static int fail(const char *what) {
    fprintf(stderr, "osu: %s\n", what);
    MPI_Abort(MPI_COMM_WORLD, 2);
    return 2;
}

/* Reads `size iters skip` lines (others, `#` comments, are skipped). */
static int read_plan(const char *path, struct step *steps) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < MAX_SIZES) {
        struct step s;
        if (line[0] == '#')
            continue;
        if (sscanf(line, "%ld %ld %ld", &s.size, &s.iters, &s.skip) == 3 && s.size >= 0 &&
            s.iters > 0 && s.skip >= 0)
            steps[n++] = s;
    }
    fclose(f);
    return n;
}

/* `len` bytes starting on a page, or NULL. */
static char *page_alloc(size_t len) {
    void *p = NULL;
    return posix_memalign(&p, 4096, len) ? NULL : p;
}

static double latency(int rank, long size, long iters, long skip, char *sbuf, char *rbuf) {
    int peer = rank ^ 1;
    double start = 0;
    for (long i = 0; i < iters + skip; i++) {
        if (i == skip)
            start = MPI_Wtime();
        if (rank % 2 == 0) {
            MPI_Send(sbuf, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD);
            MPI_Recv(rbuf, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(rbuf, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(sbuf, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD);
        }
    }
    return (MPI_Wtime() - start) * 1e6 / (2.0 * iters);
}

/* Seconds for `iters` windows after `skip` untimed ones. */
static double windows(int rank, long size, int window, long iters, long skip, int both,
                      char *sbuf, char *rbuf, MPI_Request *reqs) {
    int peer = rank ^ 1;
    int sender = rank % 2 == 0 || both, receiver = rank % 2 == 1 || both;
    char ack[4] = {0};
    double start = 0;
    for (long i = 0; i < iters + skip; i++) {
        int n = 0;
        if (i == skip)
            start = MPI_Wtime();
        if (receiver)
            for (int w = 0; w < window; w++)
                MPI_Irecv(rbuf + (size_t)w * size, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD,
                          &reqs[n++]);
        if (sender)
            for (int w = 0; w < window; w++)
                MPI_Isend(sbuf, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD, &reqs[n++]);
        MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE);
        if (rank % 2 == 0)
            MPI_Recv(ack, 4, MPI_CHAR, peer, ACK, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        else
            MPI_Send(ack, 4, MPI_CHAR, peer, ACK, MPI_COMM_WORLD);
    }
    return MPI_Wtime() - start;
}

static double collective(const char *kind, int ranks, long size, long iters, long skip,
                         float *fsend, float *frecv, char *bytes, char *buf, char *all_bytes,
                         char *all) {
    int floats = (int)(size / 4);
    double timer = 0;
    for (long i = 0; i < iters + skip; i++) {
        double start = MPI_Wtime();
        if (!strcmp(kind, "allreduce"))
            MPI_Allreduce(fsend, frecv, floats, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        else if (!strcmp(kind, "reduce"))
            MPI_Reduce(fsend, frecv, floats, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
        else if (!strcmp(kind, "bcast"))
            MPI_Bcast(buf, (int)size, MPI_CHAR, 0, MPI_COMM_WORLD);
        else if (!strcmp(kind, "allgather"))
            MPI_Allgather(bytes, (int)size, MPI_CHAR, all, (int)size, MPI_CHAR, MPI_COMM_WORLD);
        else if (!strcmp(kind, "alltoall"))
            MPI_Alltoall(all_bytes, (int)size, MPI_CHAR, all, (int)size, MPI_CHAR, MPI_COMM_WORLD);
        else
            MPI_Barrier(MPI_COMM_WORLD);
        if (i >= skip)
            timer += MPI_Wtime() - start;
        MPI_Barrier(MPI_COMM_WORLD);
    }
    double mine = timer * 1e6 / iters, total = 0;
    MPI_Allreduce(&mine, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return total / ranks;
}

/* Busy for `seconds` without an MPI call; returns the seconds spent. */
static double compute(double seconds) {
    double start = MPI_Wtime();
    volatile double x = 1.0;
    while (MPI_Wtime() - start < seconds)
        for (int i = 0; i < 64; i++)
            x = x * 1.0000001 + 1e-9;
    return MPI_Wtime() - start;
}

/* One start, `work` seconds of computation, the wait: its total time. */
static double overlap_once(const char *kind, long size, float *fsend, float *frecv, double work,
                           double *busy) {
    int floats = (int)(size / 4);
    MPI_Request req;
    double start = MPI_Wtime();
    if (!strcmp(kind, "iallreduce"))
        MPI_Iallreduce(fsend, frecv, floats, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
    else
        MPI_Ireduce(fsend, frecv, floats, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD, &req);
    *busy = work > 0 ? compute(work) : 0;
    MPI_Wait(&req, MPI_STATUS_IGNORE);
    return MPI_Wtime() - start;
}

/* Overall, compute, pure communication (µs) and overlap (%). */
static void overlap(const char *kind, int ranks, long size, long iters, long skip, float *fsend,
                    float *frecv, double out[4]) {
    double pure = 0, overall = 0, busy = 0, b;
    for (long i = 0; i < iters + skip; i++) {
        double t = overlap_once(kind, size, fsend, frecv, 0, &b);
        if (i >= skip)
            pure += t;
        MPI_Barrier(MPI_COMM_WORLD);
    }
    pure /= iters;
    for (long i = 0; i < iters + skip; i++) {
        double t = overlap_once(kind, size, fsend, frecv, pure, &b);
        if (i >= skip)
            overall += t, busy += b;
        MPI_Barrier(MPI_COMM_WORLD);
    }
    double mine[3] = {overall / iters * 1e6, busy / iters * 1e6, pure * 1e6}, sum[3];
    MPI_Allreduce(mine, sum, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (int k = 0; k < 3; k++)
        out[k] = sum[k] / ranks;
    double hidden = out[2] > 0 ? 100.0 * (1.0 - (out[0] - out[1]) / out[2]) : 0;
    out[3] = hidden < 0 ? 0 : hidden > 100 ? 100 : hidden;
}

/* Seconds for `iters` iterations of a one-sided benchmark (after `skip`
   untimed ones); `per` operations per iteration. */
static double one_sided(int put, int rank, long size, int per, long iters, long skip, char *data) {
    size_t len = (size_t)(size > 0 ? size : 1) * (size_t)per;
    char *local = page_alloc(len);
    if (!local)
        return fail("out of memory");
    memset(local, 0, len);
    MPI_Win win;
    MPI_Win_create(local, (MPI_Aint)len, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    int peer = rank ^ 1;
    double start = 0, seconds = 0;
    if (rank % 2 == 0) {
        MPI_Win_lock(MPI_LOCK_SHARED, peer, 0, win);
        for (long i = 0; i < iters + skip; i++) {
            if (i == skip)
                start = MPI_Wtime();
            for (int j = 0; j < per; j++) {
                MPI_Aint at = (MPI_Aint)j * size;
                if (put)
                    MPI_Put(data + at, (int)size, MPI_CHAR, peer, at, (int)size, MPI_CHAR, win);
                else
                    MPI_Get(data + at, (int)size, MPI_CHAR, peer, at, (int)size, MPI_CHAR, win);
            }
            MPI_Win_flush(peer, win);
        }
        seconds = MPI_Wtime() - start;
        MPI_Win_unlock(peer, win);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Win_free(&win);
    free(local);
    return seconds;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (argc != 4)
        return fail("usage: osu KIND PLAN-FILE WINDOW (the plan from `hpcomm bench KIND --plan`)");
    const char *kind = argv[1];
    int known = 0;
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++)
        known |= !strcmp(kind, KINDS[k]);
    if (!known)
        return fail("unknown benchmark");
    int window = atoi(argv[3]);
    struct step steps[MAX_SIZES];
    int n = read_plan(argv[2], steps);
    if (n <= 0 || window < 1)
        return fail("an empty or unreadable plan, or a window below 1");
    int p2p = !strcmp(kind, "latency") || !strcmp(kind, "bw") || !strcmp(kind, "bibw") ||
              !strcmp(kind, "mr") || strstr(kind, "put-") == kind || strstr(kind, "get-") == kind;
    if (p2p && (ranks < 2 || ranks % 2))
        return fail("the point-to-point benchmarks need an even number of ranks");
    long max = 0;
    for (int i = 0; i < n; i++)
        max = steps[i].size > max ? steps[i].size : max;
    size_t big = (size_t)max * (size_t)(p2p ? window : ranks) + 1;
    /* The send buffer and the receive area start on a page, as hpcomm
       bench's do: the kernel's single copy runs slower when source and
       destination differ in alignment. */
    char *sbuf = page_alloc((size_t)max + 1), *rbuf = page_alloc(big), *all_bytes = malloc(big);
    char *all = malloc(big);
    float *fsend = malloc((size_t)max + 4), *frecv = malloc((size_t)max + 4);
    MPI_Request *reqs = malloc(sizeof(MPI_Request) * 2 * (size_t)window);
    if (!sbuf || !rbuf || !all_bytes || !all || !fsend || !frecv || !reqs)
        return fail("out of memory");
    memset(sbuf, 'a', (size_t)max + 1);
    memset(rbuf, 0, big);
    memset(all_bytes, 'a', big);
    memset(all, 0, big);
    for (long i = 0; i < max / 4 + 1; i++)
        fsend[i] = 1.0f, frecv[i] = 0.0f;
    double values[MAX_SIZES], columns[MAX_SIZES][4];
    int overlapping = !strcmp(kind, "iallreduce") || !strcmp(kind, "ireduce");
    for (int i = 0; i < n; i++) {
        long size = steps[i].size, iters = steps[i].iters, skip = steps[i].skip;
        if (!strcmp(kind, "latency"))
            values[i] = latency(rank, size, iters, skip, sbuf, rbuf);
        else if (!strcmp(kind, "bw"))
            values[i] = (double)size * window * iters /
                        windows(rank, size, window, iters, skip, 0, sbuf, rbuf, reqs) / 1e6;
        else if (!strcmp(kind, "bibw"))
            values[i] = 2.0 * size * window * iters /
                        windows(rank, size, window, iters, skip, 1, sbuf, rbuf, reqs) / 1e6;
        else if (!strcmp(kind, "mr"))
            values[i] = (double)window * iters /
                        windows(rank, size, window, iters, skip, 0, sbuf, rbuf, reqs);
        else if (!strcmp(kind, "put-latency") || !strcmp(kind, "get-latency"))
            values[i] = one_sided(kind[0] == 'p', rank, size, 1, iters, skip, rbuf) * 1e6 / iters;
        else if (!strcmp(kind, "put-bw") || !strcmp(kind, "get-bw"))
            values[i] = (double)size * window * iters /
                        one_sided(kind[0] == 'p', rank, size, window, iters, skip, rbuf) / 1e6;
        else if (overlapping)
            overlap(kind, ranks, size, iters, skip, fsend, frecv, columns[i]);
        else
            values[i] = collective(kind, ranks, size, iters, skip, fsend, frecv, sbuf, rbuf,
                                   all_bytes, all);
    }
    if (rank == 0) {
        int version_len;
        char version[MPI_MAX_LIBRARY_VERSION_STRING];
        MPI_Get_library_version(version, &version_len);
        char *eol = strchr(version, '\n');
        if (eol)
            *eol = 0;
        printf("# osu.c %s, %d ranks, window %d: %.60s\n", kind, ranks, window, version);
        if (overlapping) {
            printf("# Size      Overall(us)  Compute(us)  Pure Comm.(us)  Overlap(%%)\n");
            for (int i = 0; i < n; i++)
                printf("%-10ld%12.2f%13.2f%16.2f%12.2f\n", steps[i].size, columns[i][0],
                       columns[i][1], columns[i][2], columns[i][3]);
        } else {
            printf("# Size      Value\n");
            for (int i = 0; i < n; i++)
                printf("%-10ld%16.2f\n", steps[i].size, values[i]);
        }
    }
    free(sbuf), free(rbuf), free(all_bytes), free(all), free(fsend), free(frecv), free(reqs);
    MPI_Finalize();
    return 0;
}
