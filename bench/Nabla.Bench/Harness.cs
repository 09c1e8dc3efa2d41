using System.Diagnostics;

namespace Nabla.Bench;

/// <summary>One framework's implementation of a benchmark row: a setup that returns the step to time.</summary>
sealed record Candidate(string Framework, Func<Action> Setup);

/// <summary>Median seconds per iteration, the interquartile spread relative to the median, the process CPU
/// time per wall second while this framework's samples ran (how many cores it kept busy), and every sample's seconds
/// per iteration in round order (sample s of every framework of a row was taken in the same round).</summary>
sealed record Measurement(string Framework, double Seconds, double Spread, int Iterations, int Samples, double Cores, double[] Times);

static class Harness
{
    public static int Samples = 9;
    public static double SampleSeconds = 0.15;

    /// <summary>NABLA_BENCH_TRACE=1 prints every sample to stderr: to see whether a slow row is a slow phase of the machine.</summary>
    static readonly bool Trace = Environment.GetEnvironmentVariable("NABLA_BENCH_TRACE") == "1";

    /// <summary>NABLA_BENCH_PROBE_EACH=1 takes the host probe (about a second) before every round of samples and prints it to
    /// stderr, so that with NABLA_BENCH_TRACE=1 each round's times can be read against the host's state of that moment
    /// (the slow phases of bench/README.md, sessions 17 and 18). It lengthens a run by a second per round.</summary>
    static readonly bool ProbeEach = Environment.GetEnvironmentVariable("NABLA_BENCH_PROBE_EACH") == "1";
    public static double WarmupSeconds = 0.4;
    public const int WarmupIterations = 60;
    public const double WarmupCapSeconds = 4;
    public const int PauseMs = 100;

    /// <summary>
    /// Warms every candidate up, then takes <see cref="Samples"/> timed samples of each, interleaved
    /// (A B C, B C A, C A B, ...) so that noise from other processes on the machine lands on all of them
    /// alike. Each sample runs enough iterations to last about <see cref="SampleSeconds"/>.
    /// </summary>
    public static List<Measurement> Run(IReadOnlyList<Candidate> candidates)
    {
        var steps = candidates.Select(c => c.Setup()).ToArray();
        var iters = new int[steps.Length];
        for (int i = 0; i < steps.Length; i++)
        {
            // NOTE: warm-up lets tiered JIT reach tier 1, the peers build their thread pools and caches. Tier 1 comes after
            // 30 calls of a method (and a background compile), so a time budget alone was not enough for slow steps: the
            // CNN training step's first samples read 33–60 ms against 13–22 ms later (bench/README.md, "Session 5").
            // So at least WarmupIterations too, up to WarmupCapSeconds.
            var sw = Stopwatch.StartNew();
            int n = 0;
            while (n < 3 || (sw.Elapsed.TotalSeconds < WarmupSeconds && n < 10_000_000)
                   || (n < WarmupIterations && sw.Elapsed.TotalSeconds < WarmupCapSeconds))
            {
                steps[i]();
                n++;
            }
            double per = sw.Elapsed.TotalSeconds / n;
            iters[i] = (int)Math.Clamp(SampleSeconds / per, 1, 50_000_000);
        }

        var times = new double[steps.Length][];
        var cpu = new double[steps.Length];
        var wall = new double[steps.Length];
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        for (int i = 0; i < steps.Length; i++) times[i] = new double[Samples];
        for (int s = 0; s < Samples; s++)
        {
            if (ProbeEach) Console.Error.WriteLine($"  round {s} probe: {HostProbe.Measure()}");
            for (int j = 0; j < steps.Length; j++)
            {
                int i = (j + s) % steps.Length;
                // NOTE: a pause lets the previous framework's spinning workers (OpenMP, ORT, .NET pool) go idle. 15 ms was
                // not enough: ResNet-18 at 2 threads measured 11.5–12.6 ms for Nabla right after ONNX Runtime's samples and
                // 10.0–10.6 ms with 100–200 ms pauses, ONNX Runtime's own time unchanged (9.5–9.7 ms); with ORT's
                // spinning turned off (session.intra_op.allow_spinning = 0) 10.6 ms after a 15 ms pause.
                Thread.Sleep(PauseMs);
                var step = steps[i];
                int n = iters[i];
                self.Refresh();
                var c0 = self.TotalProcessorTime;
                long t0 = Stopwatch.GetTimestamp();
                for (int k = 0; k < n; k++) step();
                double elapsed = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                self.Refresh();
                cpu[i] += (self.TotalProcessorTime - c0).TotalSeconds;
                wall[i] += elapsed;
                times[i][s] = elapsed / n;
                if (Trace) Console.Error.WriteLine($"  sample {s} {candidates[i].Framework}: {elapsed / n * 1e3:F3} ms");
            }
        }

        var result = new List<Measurement>();
        for (int i = 0; i < steps.Length; i++)
        {
            var t = times[i].OrderBy(x => x).ToArray();
            double med = Quantile(t, 0.5);
            double spread = (Quantile(t, 0.75) - Quantile(t, 0.25)) / med;
            result.Add(new Measurement(candidates[i].Framework, med, spread, iters[i], Samples, cpu[i] / wall[i], times[i]));
        }
        return result;
    }

    internal static double Quantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }
}

/// <summary>
/// The ratio of two frameworks' times taken round by round. Samples of one round are seconds apart, so a slow phase of
/// the shared machine lands on both sides of a ratio, where the ratio of the two overall medians mixes phases. The
/// median of the per-round ratios comes with a distribution-free confidence interval: with n ratios sorted, the
/// order statistics r(k) and r(n+1-k), where k is the largest rank with P(Binomial(n, 1/2) &lt; k) &lt;= 2.5 %, enclose
/// the true median with at least 95 % probability (for n = 9, ranks 2 and 8: 96.1 %). Below 6 rounds no such k exists,
/// and the interval is the smallest to the largest ratio (n = 5: 93.8 %).
/// </summary>
static class PairedRatio
{
    public static (double Median, double Low, double High) Of(double[] mine, double[] peer)
    {
        int n = Math.Min(mine.Length, peer.Length);
        if (n == 0) throw new ArgumentException("no samples to pair");
        var r = new double[n];
        for (int s = 0; s < n; s++) r[s] = mine[s] / peer[s];
        Array.Sort(r);
        int k = Interval(n).Rank;
        return (Harness.Quantile(r, 0.5), r[k - 1], r[n - k]);
    }

    /// <summary>The largest rank k (at least 1) with P(X &lt;= k - 1) &lt;= 0.025 for X ~ Binomial(n, 1/2), and the interval's
    /// coverage 1 - 2·P(X &lt;= k - 1).</summary>
    internal static (int Rank, double Coverage) Interval(int n)
    {
        double p = Math.Pow(0.5, n), cdf = 0, tail = p;
        int k = 1;
        for (int j = 0; j < n; j++)
        {
            // p is P(X = j), cdf becomes P(X <= j): the chance that r(j + 1) lies above the true median.
            cdf += p;
            if (cdf > 0.025) break;
            k = j + 1;
            tail = cdf;
            p = p * (n - j) / (j + 1);
        }
        return (k, 1 - 2 * tail);
    }
}
