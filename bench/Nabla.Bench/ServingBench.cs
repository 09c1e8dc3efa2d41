using System.Diagnostics;
using System.Globalization;
using System.Text;
using Google.Protobuf;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Nabla.Interop.Onnx;
using Nabla.Serving;
using Nabla.Serving.Grpc;

namespace Nabla.Bench;

/// <summary>
/// <c>--serving</c>: Nabla.Serving in-process on loopback with mnist-8 (tests/fixtures/serving/mnist-8), driven by a
/// bounded closed-loop load generator over REST JSON, REST binary and gRPC at concurrency 1 and 16. Reports p50/p99
/// latency, throughput, and server overhead = p50 latency − p50 in-process model time (OnnxModel.Run alone).
///
/// usage: dotnet run -c Release --project bench/Nabla.Bench -- --serving [--seconds 3] [--out table.md]
/// </summary>
static class ServingBench
{
    sealed record Cell(string Transport, int Concurrency, double P50Ms, double P99Ms, double PerSecond, long Requests, long Errors);

    public static int Run(string[] args)
    {
        double seconds = 3;
        string? outPath = null;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--seconds" && i + 1 < args.Length) seconds = double.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i] == "--out" && i + 1 < args.Length) outPath = args[++i];
        }
        seconds = Math.Clamp(seconds, 0.2, 60);
        return RunAsync(seconds, outPath).GetAwaiter().GetResult();
    }

    static string FindMnist()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        for (int up = 0; dir is not null && up < 10; up++, dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "fixtures", "serving", "mnist-8");
            if (File.Exists(Path.Combine(candidate, "model.onnx"))) return candidate;
        }
        throw new FileNotFoundException("tests/fixtures/serving/mnist-8 not found above " + AppContext.BaseDirectory);
    }

    static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    static async Task<int> RunAsync(double seconds, string? outPath)
    {
        var mnist = FindMnist();
        var input = OnnxModel.ReadTensor(Path.Combine(mnist, "test_data_set_0", "input_0.pb")).ToArray<float>();
        var root = Path.Combine(Path.GetTempPath(), "nabla-serving-bench-" + Guid.NewGuid().ToString("N"));
        var versionDir = Path.Combine(root, "mnist", "1");
        Directory.CreateDirectory(versionDir);
        File.Copy(Path.Combine(mnist, "model.onnx"), Path.Combine(versionDir, "model.onnx"));
        File.WriteAllText(Path.Combine(root, "mnist", "config.json"), """
            { "name": "mnist", "platform": "nabla_onnx", "max_batch_size": 0,
              "input": [ { "name": "Input3", "data_type": "TYPE_FP32", "dims": [ 1, 1, 28, 28 ] } ],
              "output": [ { "name": "Plus214_Output_0", "data_type": "TYPE_FP32", "dims": [ 1, 10 ] } ] }
            """);
        string loadBefore = LoadAverage();
        try
        {
            // In-process model time: the same graph and input, OnnxModel.Run alone, p50 over a bounded number of runs.
            // Measured before the load (cold-ish JIT) and again after it (tiered JIT done); the overhead uses the later one.
            var model = OnnxModel.Load(Path.Combine(versionDir, "model.onnx"));
            var feed = new Dictionary<string, Tensor> { ["Input3"] = Tensor.FromArray(input, 1, 1, 28, 28) };
            double ModelP50()
            {
                var times = new List<double>();
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < 20_000 && (i < 50 || clock.Elapsed.TotalSeconds < Math.Min(seconds, 3)); i++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    model.Run(feed);
                    if (i >= 20) times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                }
                times.Sort();
                return Percentile(times, 0.50);
            }
            double modelP50Before = ModelP50();

            var options = new ServingOptions { ModelRepository = root, HttpPort = 0, GrpcPort = 0 };
            await using var app = NablaServing.BuildServer(options, LogLevel.Warning);
            await app.StartAsync();
            var (httpPort, grpcPort) = NablaServing.BoundPorts(app);
            var state = app.Services.GetRequiredService<ServerState>();
            var ready = Stopwatch.StartNew();
            while (!state.Loaded && ready.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(20);
            if (!state.Loaded) throw new InvalidOperationException("mnist did not load within 60 s");

            var json = Encoding.UTF8.GetBytes("{\"inputs\":[{\"name\":\"Input3\",\"shape\":[1,1,28,28],\"datatype\":\"FP32\",\"data\":[" +
                string.Join(",", input.Select(v => v.ToString("R", CultureInfo.InvariantCulture))) + "]}]}");
            var header = Encoding.UTF8.GetBytes("{\"inputs\":[{\"name\":\"Input3\",\"shape\":[1,1,28,28],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":3136}}],\"parameters\":{\"binary_data_output\":true}}");
            var raw = new byte[3136];
            Buffer.BlockCopy(input, 0, raw, 0, raw.Length);
            byte[] binaryBody = [.. header, .. raw];
            string headerLength = header.Length.ToString(CultureInfo.InvariantCulture);
            var grpcRequest = new ModelInferRequest
            {
                ModelName = "mnist",
                Inputs = { new ModelInferRequest.Types.InferInputTensor { Name = "Input3", Datatype = "FP32", Shape = { 1, 1, 28, 28 } } },
                RawInputContents = { ByteString.CopyFrom(raw) },
            };

            var cells = new List<Cell>();
            foreach (int concurrency in new[] { 1, 16 })
            {
                using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = concurrency };
                using var http = new HttpClient(handler) { BaseAddress = new Uri($"http://127.0.0.1:{httpPort}"), Timeout = TimeSpan.FromSeconds(30) };
                using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{grpcPort}");
                var grpc = new GRPCInferenceService.GRPCInferenceServiceClient(channel);

                async Task<bool> RestJson()
                {
                    using var content = new ByteArrayContent(json);
                    content.Headers.ContentType = new("application/json");
                    using var resp = await http.PostAsync("/v2/models/mnist/infer", content);
                    await resp.Content.ReadAsByteArrayAsync();
                    return resp.IsSuccessStatusCode;
                }
                async Task<bool> RestBinary()
                {
                    using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/mnist/infer") { Content = new ByteArrayContent(binaryBody) };
                    req.Content.Headers.ContentType = new("application/octet-stream");
                    req.Headers.Add(RestApi.HeaderLengthName, headerLength);
                    using var resp = await http.SendAsync(req);
                    await resp.Content.ReadAsByteArrayAsync();
                    return resp.IsSuccessStatusCode;
                }
                async Task<bool> Grpc()
                {
                    var r = await grpc.ModelInferAsync(grpcRequest);
                    return r.RawOutputContents.Count == 1 && r.RawOutputContents[0].Length == 40;
                }
                cells.Add(await Measure("REST JSON", concurrency, seconds, RestJson));
                cells.Add(await Measure("REST binary", concurrency, seconds, RestBinary));
                cells.Add(await Measure("gRPC", concurrency, seconds, Grpc));
            }
            await app.StopAsync();
            double modelP50 = ModelP50();
            string loadAfter = LoadAverage();

            var sb = new StringBuilder();
            sb.AppendLine(CultureInfo.InvariantCulture, $"mnist-8 (batch 1, max_batch_size 0: one execution at a time), {seconds:0.#} s per cell after a 0.5 s warm-up; in-process model time p50 {modelP50:F3} ms (before the load: {modelP50Before:F3} ms)");
            sb.AppendLine(CultureInfo.InvariantCulture, $"{Environment.ProcessorCount} cores, .NET {Environment.Version}, load average before {loadBefore}, after {loadAfter}");
            sb.AppendLine();
            sb.AppendLine("| transport | concurrency | p50 ms | p99 ms | req/s | server overhead p50 ms | requests | errors |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var c in cells)
                sb.AppendLine(CultureInfo.InvariantCulture, $"| {c.Transport} | {c.Concurrency} | {c.P50Ms:F3} | {c.P99Ms:F3} | {c.PerSecond:F0} | {c.P50Ms - modelP50:F3} | {c.Requests} | {c.Errors} |");
            Console.Out.Write(sb.ToString());
            if (outPath is not null) File.WriteAllText(outPath, sb.ToString());
            return cells.Any(c => c.Errors > 0) ? 1 : 0;
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>A closed loop: <paramref name="concurrency"/> workers send back to back, bounded by time and by count.</summary>
    static async Task<Cell> Measure(string transport, int concurrency, double seconds, Func<Task<bool>> send)
    {
        const int MaxPerWorker = 200_000;
        async Task<(List<double> Ms, long Errors)> Worker(TimeSpan length, bool record)
        {
            var ms = new List<double>();
            long errors = 0;
            var clock = Stopwatch.StartNew();
            for (int n = 0; n < MaxPerWorker && clock.Elapsed < length; n++)
            {
                long t0 = Stopwatch.GetTimestamp();
                bool ok;
                try { ok = await send(); }
                catch (Exception e) when (e is HttpRequestException or global::Grpc.Core.RpcException or TaskCanceledException) { ok = false; }
                if (!ok) errors++;
                else if (record) ms.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
            return (ms, errors);
        }
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(() => Worker(TimeSpan.FromSeconds(0.5), record: false))));
        var wall = Stopwatch.StartNew();
        var results = await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(() => Worker(TimeSpan.FromSeconds(seconds), record: true))));
        wall.Stop();
        var all = results.SelectMany(r => r.Ms).ToList();
        all.Sort();
        long errors = results.Sum(r => r.Errors);
        Console.Error.WriteLine($"  {transport} x{concurrency}: {all.Count} ok, {errors} errors in {wall.Elapsed.TotalSeconds:F1} s");
        return new Cell(transport, concurrency, Percentile(all, 0.50), Percentile(all, 0.99), all.Count / wall.Elapsed.TotalSeconds, all.Count, errors);
    }

    static double Percentile(List<double> sorted, double q) =>
        sorted.Count == 0 ? double.NaN : sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(q * sorted.Count) - 1)];
}
