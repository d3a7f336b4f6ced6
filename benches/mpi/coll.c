/*
 * Collective benchmarks for an MPI library, with exactly the method and
 * output of `hpcomm bench allreduce|reduce|bcast|allgather|alltoall|barrier`
 * (OSU's: every iteration timed alone, a barrier between iterations, the
 * ranks' average latencies averaged), so that the two run side by side:
 *
 *   mpicc -O2 -o coll benches/mpi/coll.c
 *   mpirun -n 4 ./coll allreduce [min-size] [max-size]
 *
 * Reductions are sums of floats (sizes in bytes, at least 4); bcast is from
 * rank 0; allgather's size is per rank, alltoall's per pair. Iterations:
 * 1000 (200 warm-up) up to 8 KiB, 100 (10 warm-up) above.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int rank, n;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (argc < 2) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -n N %s allreduce|reduce|bcast|allgather|alltoall|barrier [min] [max]\n", argv[0]);
        MPI_Finalize();
        return 2;
    }
    const char *kind = argv[1];
    int reduction = !strcmp(kind, "allreduce") || !strcmp(kind, "reduce");
    int barrier = !strcmp(kind, "barrier");
    size_t min = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    size_t max = argc > 3 ? strtoull(argv[3], NULL, 10) : (1u << 20);
    if (reduction && min < 4)
        min = 4;
    if (barrier)
        min = max = 0;
    size_t cap = max ? max : 1;
    float *fs = malloc(cap), *fr = malloc(cap);
    char *bs = malloc(cap * (size_t)n), *br = malloc(cap * (size_t)n);
    for (size_t i = 0; i < cap / 4; i++)
        fs[i] = 1.0f;
    memset(bs, 'a', cap * (size_t)n);
    memset(br, 0, cap * (size_t)n);
    if (rank == 0)
        printf("# MPI %s, %d ranks (Avg Latency(us))\n", kind, n);
    for (size_t sz = min; sz <= max; sz = sz ? sz * 2 : 1) {
        int iters = sz > 8192 ? 100 : 1000, skip = sz > 8192 ? 10 : 200;
        double timer = 0;
        for (int i = 0; i < iters + skip; i++) {
            double t = MPI_Wtime();
            if (!strcmp(kind, "allreduce"))
                MPI_Allreduce(fs, fr, (int)(sz / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            else if (!strcmp(kind, "reduce"))
                MPI_Reduce(fs, fr, (int)(sz / 4), MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
            else if (!strcmp(kind, "bcast"))
                MPI_Bcast(br, (int)sz, MPI_CHAR, 0, MPI_COMM_WORLD);
            else if (!strcmp(kind, "allgather"))
                MPI_Allgather(bs, (int)sz, MPI_CHAR, br, (int)sz, MPI_CHAR, MPI_COMM_WORLD);
            else if (!strcmp(kind, "alltoall"))
                MPI_Alltoall(bs, (int)sz, MPI_CHAR, br, (int)sz, MPI_CHAR, MPI_COMM_WORLD);
            else
                MPI_Barrier(MPI_COMM_WORLD);
            if (i >= skip)
                timer += MPI_Wtime() - t;
            MPI_Barrier(MPI_COMM_WORLD);
        }
        double mine = timer * 1e6 / iters, total = 0;
        MPI_Reduce(&mine, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0)
            printf("%-10zu%16.2f\n", sz, total / n);
        if (barrier)
            break;
    }
    free(fs);
    free(fr);
    free(bs);
    free(br);
    MPI_Finalize();
    return 0;
}
