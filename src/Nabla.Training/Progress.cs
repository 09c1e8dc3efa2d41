using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Nabla.Training;

/// <summary>
/// Shows training progress: a live single line (carriage return) in a terminal, or a plain log line about every
/// <see cref="PlainInterval"/> when output is redirected, and always a summary line per epoch.
/// </summary>
public sealed class ProgressReporter
{
    readonly TextWriter output;
    readonly bool live;
    readonly Stopwatch sinceLast = Stopwatch.StartNew();
    Stopwatch epochClock = Stopwatch.StartNew();
    long items;
    public TimeSpan PlainInterval { get; set; } = TimeSpan.FromSeconds(5);

    public ProgressReporter(TextWriter? output = null, bool? live = null)
    {
        this.output = output ?? Console.Out;
        this.live = live ?? (output is null && !Console.IsOutputRedirected);
    }

    public void EpochStart()
    {
        epochClock = Stopwatch.StartNew();
        items = 0;
        sinceLast.Restart();
    }

    static string Fmt(IReadOnlyDictionary<string, double> m) =>
        string.Join(" ", m.Select(kv => $"{kv.Key}={kv.Value.ToString("0.0000", CultureInfo.InvariantCulture)}"));

    public void Batch(int epoch, int maxEpochs, int batch, int batches, int batchItems, IReadOnlyDictionary<string, double> metrics)
    {
        items += batchItems;
        double rate = items / Math.Max(epochClock.Elapsed.TotalSeconds, 1e-9);
        if (live)
        {
            if (sinceLast.ElapsedMilliseconds < 100 && batch + 1 < batches) return;
            sinceLast.Restart();
            int width = 24, done = batches > 0 ? (int)((long)width * (batch + 1) / batches) : 0;
            var bar = new StringBuilder().Append('█', done).Append('░', width - done);
            output.Write($"\rEpoch {epoch + 1}/{maxEpochs} {bar} {batch + 1}/{batches} [{epochClock.Elapsed:mm\\:ss}, {rate:0} it/s] {Fmt(metrics)}   ");
        }
        else if (sinceLast.Elapsed >= PlainInterval)
        {
            sinceLast.Restart();
            output.WriteLine($"epoch {epoch + 1}/{maxEpochs} batch {batch + 1}/{batches} {rate:0} items/s {Fmt(metrics)}");
        }
    }

    public void EpochEnd(int epoch, int maxEpochs, IReadOnlyDictionary<string, double> metrics)
    {
        if (live) output.WriteLine();
        // NOTE: the resident set size is printed so that memory growth across epochs is visible in every log.
        long rss = Environment.WorkingSet / (1 << 20);
        output.WriteLine($"epoch {epoch + 1}/{maxEpochs} done in {epochClock.Elapsed.TotalSeconds:0.0}s ({items / Math.Max(epochClock.Elapsed.TotalSeconds, 1e-9):0} items/s, rss {rss} MiB) {Fmt(metrics)}");
        output.Flush();
    }
}
