using System.Diagnostics;

namespace Nabla.Bench;

/// <summary>
/// A one-second look at the host, taken before and after a bench run and printed with its table: the FMA rate of one
/// core and of all cores (<see cref="Peak"/>'s loop), and the latency of dependent loads over working sets from 256 KB to
/// 64 MB, and the round trip of a cache line between two cores. This machine is a shared virtual one whose speed moves between phases that last minutes (bench/README.md,
/// sessions 14–17); the probe says which resource moved in a run: the cores' arithmetic (frequency, or a neighbour on the
/// same physical core), the caches and memory (what is left of the last-level cache to this machine), or the distance
/// between the two vCPUs.
/// </summary>
static class HostProbe
{
    static readonly int[] WorkingSetsKb = [256, 2048, 4096, 16384, 65536];

    public static string Measure()
    {
        string fma = System.Runtime.Intrinsics.X86.Fma.IsSupported
            ? $"FMA {Fma(1):0} GFLOP/s on 1 core, {Fma(Environment.ProcessorCount):0} on {Environment.ProcessorCount}; "
            : "no FMA; ";
        var lat = WorkingSetsKb.Select(kb => $"{(kb >= 1024 ? $"{kb / 1024} MB" : $"{kb} KB")} {Chase(kb):0.0}").ToList();
        string pingPong = Environment.ProcessorCount > 1 ? $"; a cache line between two cores and back {PingPong():0} ns" : "";
        return fma + "dependent loads (ns) over " + string.Join(", ", lat) + pingPong;
    }

    /// <summary>GFLOP/s of <paramref name="threads"/> threads, started together, each running the FMA loop in chunks for
    /// 0.2 s (also <c>--peak</c>'s figure).</summary>
    internal static double Fma(int threads)
    {
        const long chunk = 100_000;
        Peak.Loop(chunk);
        using var go = new ManualResetEventSlim(false);
        var counts = new long[threads];
        var clock = new Stopwatch();
        var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            go.Wait();
            long n = 0;
            while (clock.Elapsed.TotalSeconds < 0.2) { Peak.Loop(chunk); n++; }
            counts[i] = n;
        })).ToList();
        workers.ForEach(t => t.Start());
        clock.Start();
        go.Set();
        workers.ForEach(t => t.Join());
        return counts.Sum() * chunk * Peak.FlopsPerIteration / clock.Elapsed.TotalSeconds / 1e9;
    }

    /// <summary>Nanoseconds for one round trip of a cache line between two spinning threads: each waits for the other's
    /// value, then writes its own. With both threads on their own cores it is what a handoff of one line between the
    /// cores costs (a fork-join's wake-up and join pay it a few times; bulk copies overlap many). On this host it has
    /// read 430–520 ns, about twice the probe's memory latency, and once 130 ns (bench/README.md, "Session 17"). The timed
    /// part stops after 0.1 s, and a waiting thread yields now and then, so two threads that share one core finish too
    /// (with a figure that is then the scheduler's, not the cache's).</summary>
    static double PingPong()
    {
        const int warm = 2_000, trips = 20_000;
        var line = new long[32];   // the flag at index 16: a cache line of its own
        var other = new Thread(() => Bounce(line, warm + trips, 1, long.MaxValue));
        other.Start();
        Bounce(line, warm, 0, long.MaxValue);
        var sw = Stopwatch.StartNew();
        int done = Bounce(line, trips, 2L * warm, Stopwatch.GetTimestamp() + Stopwatch.Frequency / 10);
        double ns = sw.Elapsed.TotalNanoseconds / Math.Max(1, done);
        Volatile.Write(ref line[16], -1);   // releases the other side if the deadline cut the timed part short
        other.Join();
        return ns;
    }

    /// <summary>Up to <paramref name="trips"/> turns of the ping-pong from value <paramref name="from"/>: the side starting
    /// at an even value writes odd ones, the other side even ones, each after seeing the value before its own. Stops at
    /// <paramref name="deadline"/> (a <see cref="Stopwatch"/> timestamp) or when the flag turns negative; returns the
    /// turns done.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    static int Bounce(long[] line, int trips, long from, long deadline)
    {
        ref long flag = ref line[16];
        bool even = (from & 1) == 0;
        int done = 0;
        for (long i = from, end = from + 2L * trips; i < end; i += 2, done++)
        {
            if (even)
            {
                if (Stopwatch.GetTimestamp() > deadline) return done;
                Volatile.Write(ref flag, i + 1);
            }
            long want = even ? i + 2 : i;
            for (int spins = 1; ; spins++)
            {
                long v = Volatile.Read(ref flag);
                if (v == want) break;
                if (v < 0) return done;
                if ((spins & 0xFFFF) == 0) Thread.Yield();
            }
            if (!even) Volatile.Write(ref flag, i + 1);
        }
        return done;
    }

    /// <summary>Nanoseconds per load of a pointer chase through one random cycle over <paramref name="kb"/> KB, one load
    /// per 64-byte line, so that no prefetcher can guess the next address.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    static double Chase(int kb)
    {
        int lines = kb * 1024 / 64, stride = 16;   // ints per line
        var next = new int[lines * stride];
        var order = Enumerable.Range(0, lines).ToArray();
        new Random(1).Shuffle(order);
        for (int i = 0; i < lines; i++) next[order[i] * stride] = order[(i + 1) % lines] * stride;
        int p = 0;
        for (int i = 0; i < lines; i++) p = next[p];   // one pass to bring in what fits
        const int loads = 2_000_000;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < loads; i++) p = next[p];
        double ns = sw.Elapsed.TotalNanoseconds / loads;
        GC.KeepAlive(p);
        return ns;
    }
}
