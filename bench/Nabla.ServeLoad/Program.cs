using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Nabla.Serving;

namespace Nabla.ServeLoad;

/// <summary>
/// usage: Nabla.ServeLoad MODEL.onnx [requests=600] [warm-up requests=30]
/// Serves MODEL from a temporary repository (configuration from the graph) on loopback, waits until it is ready, sends the
/// warm-up requests, then the measured ones one after another: raw-binary REST bodies (header length 0) of uniform(0, 1)
/// floats in the shape of the model's single input (unknown dimensions 1). Prints requests per second, latency
/// percentiles, the bytes allocated in the process per request (client included), the collections and GC pause over the
/// measured requests, and the server's per-request queue / input / infer / output times from its statistics endpoint.
/// </summary>
static class Program
{
    static async Task<int> Main(string[] args)
    {
        if (args.Length < 1) { Console.Error.WriteLine("usage: Nabla.ServeLoad MODEL.onnx [requests] [warm-up requests]"); return 2; }
        int n = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 600;
        int warm = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 30;
        var root = Path.Combine(Path.GetTempPath(), "nabla-serveload-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path.Combine(root, "m", "1"));
        File.Copy(args[0], Path.Combine(root, "m", "1", "model.onnx"));
        var app = NablaServing.BuildServer(new ServingOptions { ModelRepository = root, HttpPort = 0, GrpcPort = 0 }, LogLevel.Warning);
        try
        {
            await app.StartAsync();
            var (http, _) = NablaServing.BoundPorts(app);
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{http}"), Timeout = TimeSpan.FromMinutes(2) };
            for (int t = 0; !(await client.GetAsync("/v2/models/m/ready")).IsSuccessStatusCode; t++)
            {
                if (t > 1200) throw new TimeoutException("the model did not become ready within 2 minutes");
                await Task.Delay(100);
            }
            using var meta = JsonDocument.Parse(await client.GetStringAsync("/v2/models/m"));
            var input = meta.RootElement.GetProperty("inputs")[0];
            long elems = input.GetProperty("shape").EnumerateArray().Aggregate(1L, (a, d) => a * Math.Max(1, d.GetInt64()));
            var body = new byte[elems * 4];
            var rnd = new Random(1);
            for (long i = 0; i < elems; i++) BitConverter.TryWriteBytes(body.AsSpan((int)(4 * i)), (float)rnd.NextDouble());

            async Task<double> One()
            {
                var content = new ByteArrayContent(body);
                content.Headers.Add("Inference-Header-Content-Length", "0");
                content.Headers.ContentType = new("application/octet-stream");
                long s = Stopwatch.GetTimestamp();
                using var r = await client.PostAsync("/v2/models/m/infer", content);
                var reply = await r.Content.ReadAsByteArrayAsync();
                if (!r.IsSuccessStatusCode) throw new InvalidOperationException(System.Text.Encoding.UTF8.GetString(reply));
                return Stopwatch.GetElapsedTime(s).TotalMilliseconds;
            }

            for (int i = 0; i < warm; i++) await One();
            var before = await Stats(client);
            GC.Collect();
            long allocated = GC.GetTotalAllocatedBytes(true);
            int gen0 = GC.CollectionCount(0), gen2 = GC.CollectionCount(2);
            var pause = GC.GetTotalPauseDuration();
            var ms = new List<double>(n);
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < n; i++) ms.Add(await One());
            double seconds = clock.Elapsed.TotalSeconds;
            allocated = GC.GetTotalAllocatedBytes(true) - allocated;
            var after = await Stats(client);
            ms.Sort();
            double P(double q) => ms[Math.Min(n - 1, (int)(q * n))];
            Console.WriteLine($"{n} requests ({elems} floats each) after {warm} warm-up: {n / seconds:F1} req/s, p50 {P(0.5):F2} ms, p90 {P(0.9):F2}, " +
                $"p99 {P(0.99):F2}, max {ms[^1]:F2}; allocated {allocated / (double)n / 1024:F0} KiB/request; collections gen0 {GC.CollectionCount(0) - gen0}, " +
                $"gen2 {GC.CollectionCount(2) - gen2}; GC pause {(GC.GetTotalPauseDuration() - pause).TotalMilliseconds:F0} ms");
            Console.WriteLine("server, mean per request: " + string.Join(", ", new[] { "queue", "compute_input", "compute_infer", "compute_output" }
                .Select(k => $"{k} {(after[k].Ns - before[k].Ns) / (double)Math.Max(1, after[k].Count - before[k].Count) / 1e6:F2} ms")));
            return 0;
        }
        finally
        {
            await app.StopAsync();
            Directory.Delete(root, true);
        }
    }

    static async Task<Dictionary<string, (long Count, long Ns)>> Stats(HttpClient client)
    {
        using var doc = JsonDocument.Parse(await client.GetStringAsync("/v2/models/m/stats"));
        var s = doc.RootElement.GetProperty("model_stats")[0].GetProperty("inference_stats");
        return s.EnumerateObject().ToDictionary(p => p.Name, p => (p.Value.GetProperty("count").GetInt64(), p.Value.GetProperty("ns").GetInt64()));
    }
}
