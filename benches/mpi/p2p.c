/*
 * Point-to-point benchmarks for an MPI library, with exactly the method and
 * output of `hpcomm bench`, so that the two can be run side by side:
 *
 *   mpicc -O2 -o p2p benches/mpi/p2p.c
 *   mpirun -n 2 ./p2p latency|bw|bibw|mr [min-size] [max-size] [window]
 *
 * latency: ping-pong, half the round trip. bw/mr: rank 0 sends a window of
 * non-blocking messages, rank 1 answers each window with 4 bytes. bibw: both
 * send a window at once. Iterations: 10000 (100 warm-up) up to 8 KiB, 1000
 * (10 warm-up) above. With more ranks (even), pairs 0-1, 2-3, … run at once
 * and rank 0 reports its own pair.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG 1
#define ACK 2

static double run_latency(int rank, size_t size, int iters, int skip, char *s, char *r)
{
    int peer = rank ^ 1;
    double start = 0;
    for (int i = 0; i < iters + skip; i++) {
        if (i == skip)
            start = MPI_Wtime();
        if (rank % 2 == 0) {
            MPI_Send(s, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD);
            MPI_Recv(r, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(r, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(s, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD);
        }
    }
    return (MPI_Wtime() - start) * 1e6 / (2.0 * iters);
}

/* Seconds for `iters` windows; receive buffers are distinct, as in hpcomm. */
static double run_windows(int rank, size_t size, int window, int iters, int skip, int both, char *s,
                          char *r)
{
    int peer = rank ^ 1;
    int sender = rank % 2 == 0 || both, receiver = rank % 2 == 1 || both;
    MPI_Request *reqs = malloc(sizeof(MPI_Request) * 2 * (size_t)window);
    if (!reqs)
        MPI_Abort(MPI_COMM_WORLD, 1);
    char ack[4] = {0};
    double start = 0;
    for (int i = 0; i < iters + skip; i++) {
        int n = 0;
        if (i == skip)
            start = MPI_Wtime();
        if (receiver)
            for (int w = 0; w < window; w++)
                MPI_Irecv(r + (size_t)w * size, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD, &reqs[n++]);
        if (sender)
            for (int w = 0; w < window; w++)
                MPI_Isend(s, (int)size, MPI_CHAR, peer, TAG, MPI_COMM_WORLD, &reqs[n++]);
        MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE);
        if (rank % 2 == 0)
            MPI_Recv(ack, 4, MPI_CHAR, peer, ACK, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        else
            MPI_Send(ack, 4, MPI_CHAR, peer, ACK, MPI_COMM_WORLD);
    }
    free(reqs);
    return MPI_Wtime() - start;
}

int main(int argc, char **argv)
{
    int rank, size_ranks;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size_ranks);
    if (argc < 2 || size_ranks < 2 || size_ranks % 2) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -n 2 %s latency|bw|bibw|mr [min] [max] [window]\n", argv[0]);
        MPI_Finalize();
        return 2;
    }
    const char *kind = argv[1];
    size_t min = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    size_t max = argc > 3 ? strtoull(argv[3], NULL, 10) : (4u << 20);
    int window = argc > 4 ? atoi(argv[4]) : 64;
    int is_lat = !strcmp(kind, "latency"), is_bibw = !strcmp(kind, "bibw"), is_mr = !strcmp(kind, "mr");
    char *s = malloc(max ? max : 1);
    char *r = malloc((max ? max : 1) * (size_t)window);
    memset(s, 'a', max ? max : 1);
    memset(r, 0, (max ? max : 1) * (size_t)window);
    if (rank == 0) {
        printf("# MPI %s (%s)\n", kind, is_lat ? "Latency (us)" : is_mr ? "Messages/s" : "Bandwidth (MB/s)");
    }
    for (size_t sz = min; sz <= max; sz = sz ? sz * 2 : 1) {
        int iters = sz > 8192 ? 1000 : 10000, skip = sz > 8192 ? 10 : 100;
        double v;
        if (is_lat)
            v = run_latency(rank, sz, iters, skip, s, r);
        else {
            double t = run_windows(rank, sz, window, iters, skip, is_bibw, s, r);
            v = is_mr ? (double)window * iters / t : (is_bibw ? 2.0 : 1.0) * sz * window * iters / t / 1e6;
        }
        if (rank == 0)
            printf("%-10zu%16.2f\n", sz, v);
    }
    free(s);
    free(r);
    MPI_Finalize();
    return 0;
}
