/* How far CLOCK_MONOTONIC_COARSE trails CLOCK_MONOTONIC, against the
 * resolution the kernel states for it, and what one read of each costs
 * (quoted in bench/changes.md and docs/tiered.md).
 *
 *   cc -O2 -o /tmp/clock bench/probes/clock.c && /tmp/clock
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void) {
    struct timespec r;
    clock_getres(CLOCK_MONOTONIC_COARSE, &r);
    printf("CLOCK_MONOTONIC_COARSE stated resolution: %.3f ms\n", r.tv_nsec / 1e6);
    long long maxlag = 0;
    long hist[40] = {0};
    for (int i = 0; i < 200000; i++) {
        if (i % 50 == 0)
            usleep(i % 7 * 300); /* let ticks be missed as an idle CPU misses them */
        long long p = ns(CLOCK_MONOTONIC), c = ns(CLOCK_MONOTONIC_COARSE);
        long long lag = p - c;
        if (lag > maxlag)
            maxlag = lag;
        int b = lag / 1000000;
        hist[b > 39 ? 39 : b]++;
    }
    printf("coarse behind precise: max %.3f ms; reads by whole ms behind:\n", maxlag / 1e6);
    for (int i = 0; i < 40; i++)
        if (hist[i])
            printf("  %d ms: %ld\n", i, hist[i]);
    clockid_t ids[2] = {CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE};
    const char *names[2] = {"CLOCK_MONOTONIC", "CLOCK_MONOTONIC_COARSE"};
    for (int round = 0; round < 3; round++)
        for (int k = 0; k < 2; k++) {
            long long s = ns(CLOCK_MONOTONIC), acc = 0;
            for (int i = 0; i < 10000000; i++)
                acc += ns(ids[k]);
            printf("%s: %.1f ns a read (%lld)\n", names[k], (ns(CLOCK_MONOTONIC) - s) / 1e7, acc & 1);
        }
    return 0;
}
