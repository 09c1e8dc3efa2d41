using System.Collections.Concurrent;
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
/// latency, throughput, and, from the server's own statistics over the same measured requests, the mean in-process
/// model time (compute_infer: the graph run alone) and the mean server-side request time; server overhead = p50
/// latency − that in-run model time. When Debian's wrk is installed, the REST cells are also driven by wrk.
///
/// usage: dotnet run -c Release --project bench/Nabla.Bench -- --serving [--seconds 3] [--out table.md]
/// </summary>
static class ServingBench
{
    sealed record Cell(string Transport, int Concurrency, double P50Ms, double P99Ms, double PerSecond, long Requests, long Errors,
        double ModelMs, double EngineMs, double ServerP50Ms);

    /// <summary>Per-request time inside the server: from the first middleware after Nabla's own to the response flushed.</summary>
    sealed class ServerClock
    {
        public readonly ConcurrentQueue<double> Ms = new();
        public volatile bool Recording;
    }

    /// <summary>Cumulative counters of /v2/models/mnist/stats: successes and compute_infer, count and ns.</summary>
    readonly record struct Counters(long Success, long SuccessNs, long Infer, long InferNs);

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
            var clock = new ServerClock();
            app.Use(async (ctx, next) =>
            {
                long t0 = Stopwatch.GetTimestamp();
                await next(ctx);
                if (clock.Recording) clock.Ms.Enqueue(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            });
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

            using var statsClient = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{httpPort}") };
            async Task<Counters> Snapshot()
            {
                using var doc = System.Text.Json.JsonDocument.Parse(await statsClient.GetStringAsync("/v2/models/mnist/stats"));
                var st = doc.RootElement.GetProperty("model_stats")[0].GetProperty("inference_stats");
                long C(string k) => st.GetProperty(k).GetProperty("count").GetInt64();
                long N(string k) => st.GetProperty(k).GetProperty("ns").GetInt64();
                return new Counters(C("success"), N("success"), C("compute_infer"), N("compute_infer"));
            }

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
                cells.Add(await Measure("REST JSON", concurrency, seconds, RestJson, Snapshot, clock));
                cells.Add(await Measure("REST binary", concurrency, seconds, RestBinary, Snapshot, clock));
                cells.Add(await Measure("gRPC", concurrency, seconds, Grpc, Snapshot, clock));
                // The same gRPC request from a client in its own process (this bench started again as a client).
                if (await MeasureGrpcProcess("gRPC (own process)", concurrency, seconds, grpcPort, grpcRequest, root, Snapshot, clock) is { } g) cells.Add(g);
                // The same gRPC request from Debian's h2load (nghttp2-client: a C HTTP/2 client), when it is installed.
                if (File.Exists(H2load) && await MeasureH2load("gRPC (h2load)", concurrency, seconds, grpcPort, grpcRequest, root, Snapshot, clock) is { } h) cells.Add(h);
                // The same REST requests from Debian's wrk (a C client in its own process), when it is installed.
                if (File.Exists(Wrk))
                {
                    var url = $"http://127.0.0.1:{httpPort}/v2/models/mnist/infer";
                    if (await MeasureWrk("REST JSON (wrk)", concurrency, seconds, url, json, [("Content-Type", "application/json")], root, Snapshot, clock) is { } a) cells.Add(a);
                    if (await MeasureWrk("REST binary (wrk)", concurrency, seconds, url, binaryBody,
                        [("Content-Type", "application/octet-stream"), (RestApi.HeaderLengthName, headerLength)], root, Snapshot, clock) is { } b) cells.Add(b);
                }
            }
            await app.StopAsync();
            double modelP50 = ModelP50();
            string loadAfter = LoadAverage();

            var sb = new StringBuilder();
            sb.AppendLine(CultureInfo.InvariantCulture, $"mnist-8 (batch 1, max_batch_size 0: one execution at a time), {seconds:0.#} s per cell after a 0.5 s warm-up; OnnxModel.Run alone p50 {modelP50:F3} ms after the load ({modelP50Before:F3} ms before)");
            sb.AppendLine(CultureInfo.InvariantCulture, $"{Environment.ProcessorCount} cores, .NET {Environment.Version}, load average before {loadBefore}, after {loadAfter}");
            sb.AppendLine();
            sb.AppendLine("| transport | concurrency | p50 ms | p99 ms | req/s | model ms | engine ms | in-server p50 ms | overhead p50 µs | in-server overhead p50 µs | requests | errors |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var c in cells)
                sb.AppendLine(CultureInfo.InvariantCulture, $"| {c.Transport} | {c.Concurrency} | {c.P50Ms:F3} | {c.P99Ms:F3} | {c.PerSecond:F0} | {c.ModelMs:F3} | {c.EngineMs:F3} | {c.ServerP50Ms:F3} | {(c.P50Ms - c.ModelMs) * 1000:F0} | {(c.ServerP50Ms - c.ModelMs) * 1000:F0} | {c.Requests} | {c.Errors} |");
            Console.Out.Write(sb.ToString());
            if (outPath is not null) File.WriteAllText(outPath, sb.ToString());
            return cells.Any(c => c.Errors > 0) ? 1 : 0;
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>One worker of a closed loop: sends back to back for <paramref name="length"/> (at most 200,000 requests).</summary>
    static async Task<(List<double> Ms, long Errors)> Loop(Func<Task<bool>> send, TimeSpan length, bool record)
    {
        const int MaxPerWorker = 200_000;
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

    /// <summary>A closed loop: <paramref name="concurrency"/> workers send back to back, bounded by time and by count.</summary>
    static async Task<Cell> Measure(string transport, int concurrency, double seconds, Func<Task<bool>> send, Func<Task<Counters>> snapshot, ServerClock server)
    {
        Task<(List<double> Ms, long Errors)> Worker(TimeSpan length, bool record) => Loop(send, length, record);
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(() => Worker(TimeSpan.FromSeconds(0.5), record: false))));
        var before = await snapshot();
        server.Ms.Clear();
        server.Recording = true;
        var wall = Stopwatch.StartNew();
        var results = await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(() => Worker(TimeSpan.FromSeconds(seconds), record: true))));
        wall.Stop();
        server.Recording = false;
        var inServer = server.Ms.ToList();
        inServer.Sort();
        var after = await snapshot();
        // NOTE: exactly the measured requests: every worker finished before the second snapshot.
        double modelMs = (after.InferNs - before.InferNs) / 1e6 / Math.Max(1, after.Infer - before.Infer);
        double engineMs = (after.SuccessNs - before.SuccessNs) / 1e6 / Math.Max(1, after.Success - before.Success);
        var all = results.SelectMany(r => r.Ms).ToList();
        all.Sort();
        long errors = results.Sum(r => r.Errors);
        Console.Error.WriteLine($"  {transport} x{concurrency}: {all.Count} ok, {errors} errors in {wall.Elapsed.TotalSeconds:F1} s");
        return new Cell(transport, concurrency, Percentile(all, 0.50), Percentile(all, 0.99), all.Count / wall.Elapsed.TotalSeconds, all.Count, errors, modelMs, engineMs, Percentile(inServer, 0.50));
    }

    internal const string GrpcClientFlag = "--grpc-client";

    /// <summary>
    /// One gRPC cell whose client is a second process (this bench in client mode, <see cref="GrpcClient"/>), so that
    /// client and server do not share a runtime, thread pool and GC as in the in-process rows: the child warms up,
    /// says "ready", waits for "go" (the server's counters are read in between), measures, and prints its numbers.
    /// </summary>
    static async Task<Cell?> MeasureGrpcProcess(string transport, int concurrency, double seconds, int port, ModelInferRequest request,
        string dir, Func<Task<Counters>> snapshot, ServerClock server)
    {
        var requestPath = Path.Combine(dir, "grpc-request.bin");
        await File.WriteAllBytesAsync(requestPath, request.ToByteArray());
        var self = typeof(ServingBench).Assembly.Location;
        var host = Environment.ProcessPath ?? "dotnet";
        string[] childArgs = [GrpcClientFlag, port.ToString(CultureInfo.InvariantCulture), concurrency.ToString(CultureInfo.InvariantCulture),
            seconds.ToString("R", CultureInfo.InvariantCulture), requestPath];
        var psi = Path.GetFileNameWithoutExtension(host) == "dotnet" ? new ProcessStartInfo(host, [self, .. childArgs]) : new ProcessStartInfo(host, childArgs);
        psi.RedirectStandardInput = true;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        using var p = Process.Start(psi)!;
        var errors = p.StandardError.ReadToEndAsync();
        try
        {
            var ready = await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            if (ready != "ready") { Console.Error.WriteLine($"  {transport} x{concurrency}: client said '{ready}': {await errors}"); return null; }
            var before = await snapshot();
            server.Ms.Clear();
            server.Recording = true;
            await p.StandardInput.WriteLineAsync("go");
            await p.StandardInput.FlushAsync();
            var result = await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(seconds + 60));
            server.Recording = false;
            var inServer = server.Ms.ToList();
            inServer.Sort();
            var after = await snapshot();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            var f = (result ?? "").Split(' ');
            if (p.ExitCode != 0 || f.Length != 5) { Console.Error.WriteLine($"  {transport} x{concurrency}: client failed ({p.ExitCode}): {result} {await errors}"); return null; }
            double P(int i) => double.Parse(f[i], CultureInfo.InvariantCulture);
            double modelMs = (after.InferNs - before.InferNs) / 1e6 / Math.Max(1, after.Infer - before.Infer);
            double engineMs = (after.SuccessNs - before.SuccessNs) / 1e6 / Math.Max(1, after.Success - before.Success);
            Console.Error.WriteLine($"  {transport} x{concurrency}: {(long)P(3)} ok, {(long)P(4)} errors");
            return new Cell(transport, concurrency, P(0), P(1), P(2), (long)P(3), (long)P(4), modelMs, engineMs, Percentile(inServer, 0.50));
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    /// <summary>
    /// Client mode: <c>--grpc-client PORT CONCURRENCY SECONDS REQUEST-FILE</c>. Warms up for 0.5 s, prints "ready", waits
    /// for a line on stdin, runs the closed loop for SECONDS and prints "p50ms p99ms req/s requests errors".
    /// </summary>
    internal static int GrpcClient(string[] args)
    {
        int port = int.Parse(args[1], CultureInfo.InvariantCulture), concurrency = int.Parse(args[2], CultureInfo.InvariantCulture);
        double seconds = double.Parse(args[3], CultureInfo.InvariantCulture);
        var request = ModelInferRequest.Parser.ParseFrom(File.ReadAllBytes(args[4]));
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}");
        var grpc = new GRPCInferenceService.GRPCInferenceServiceClient(channel);
        async Task<bool> Send()
        {
            var r = await grpc.ModelInferAsync(request);
            return r.RawOutputContents.Count == 1 && r.RawOutputContents[0].Length == 40;
        }
        return RunClient().GetAwaiter().GetResult();

        async Task<int> RunClient()
        {
            await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(() => Loop(Send, TimeSpan.FromSeconds(0.5), record: false))));
            Console.Out.WriteLine("ready");
            Console.Out.Flush();
            if (Console.In.ReadLine() is null) return 2;
            var wall = Stopwatch.StartNew();
            var results = await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(() => Loop(Send, TimeSpan.FromSeconds(seconds), record: true))));
            wall.Stop();
            var all = results.SelectMany(r => r.Ms).ToList();
            all.Sort();
            long errors = results.Sum(r => r.Errors);
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{Percentile(all, 0.50):R} {Percentile(all, 0.99):R} {all.Count / wall.Elapsed.TotalSeconds:R} {all.Count} {errors}"));
            return 0;
        }
    }

    const string H2load = "/usr/bin/h2load";

    /// <summary>
    /// One gRPC cell driven by h2load (-c concurrency, one stream per connection): the request is posted as a gRPC
    /// message (a zero compression flag, the big-endian length, the ModelInferRequest bytes) with content-type
    /// application/grpc; p50/p99 come from h2load's per-request log (microseconds to the end of the response).
    /// h2load sees HTTP statuses only, so the server's success counter checks that every request it sent succeeded.
    /// </summary>
    static async Task<Cell?> MeasureH2load(string transport, int concurrency, double seconds, int port, ModelInferRequest request,
        string dir, Func<Task<Counters>> snapshot, ServerClock server)
    {
        var message = request.ToByteArray();
        var framed = new byte[5 + message.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(framed.AsSpan(1), message.Length);
        message.CopyTo(framed, 5);
        var bodyPath = Path.Combine(dir, "h2load-body.bin");
        await File.WriteAllBytesAsync(bodyPath, framed);
        var logPath = Path.Combine(dir, $"h2load-{concurrency}.tsv");
        async Task<bool> Run(int s, string? log)
        {
            List<string> args = ["-t1", $"-c{concurrency}", "-m1", $"-D{s}", "-d", bodyPath, "-H", "content-type: application/grpc", "-H", "te: trailers"];
            if (log is not null) args.Add($"--log-file={log}");
            args.Add($"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer");
            var psi = new ProcessStartInfo(H2load, args) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            await p.StandardOutput.ReadToEndAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(s + 30));
            return p.ExitCode == 0;
        }
        int whole = Math.Max(1, (int)Math.Round(seconds));   // h2load takes whole seconds
        await Run(1, null);
        var before = await snapshot();
        server.Ms.Clear();
        server.Recording = true;
        var wall = Stopwatch.StartNew();
        bool ok = await Run(whole, logPath);
        wall.Stop();
        server.Recording = false;
        var inServer = server.Ms.ToList();
        inServer.Sort();
        var after = await snapshot();
        if (!ok || !File.Exists(logPath)) { Console.Error.WriteLine($"  {transport} x{concurrency}: h2load failed"); return null; }
        var ms = new List<double>();
        long errors = 0;
        foreach (var line in File.ReadLines(logPath))
        {
            var f = line.Split('\t');
            if (f.Length < 3) continue;
            if (f[1] != "200") errors++;
            else ms.Add(double.Parse(f[2], CultureInfo.InvariantCulture) / 1000);
        }
        // A gRPC failure still answers HTTP 200 (the status is in the trailers): count it through the server.
        errors += Math.Max(0, ms.Count - (after.Success - before.Success));
        ms.Sort();
        double modelMs = (after.InferNs - before.InferNs) / 1e6 / Math.Max(1, after.Infer - before.Infer);
        double engineMs = (after.SuccessNs - before.SuccessNs) / 1e6 / Math.Max(1, after.Success - before.Success);
        Console.Error.WriteLine($"  {transport} x{concurrency}: {ms.Count} requests, {errors} errors");
        return new Cell(transport, concurrency, Percentile(ms, 0.50), Percentile(ms, 0.99), ms.Count / wall.Elapsed.TotalSeconds, ms.Count, errors,
            modelMs, engineMs, Percentile(inServer, 0.50));
    }

    const string Wrk = "/usr/bin/wrk";

    /// <summary>
    /// One cell driven by wrk (-t1 -c concurrency --latency) with a Lua script that posts <paramref name="body"/>; wrk's own
    /// latency percentiles and request rate, and the server's counters over the same run. Null (and a note) if wrk fails.
    /// </summary>
    static async Task<Cell?> MeasureWrk(string transport, int concurrency, double seconds, string url, byte[] body,
        (string Name, string Value)[] headers, string dir, Func<Task<Counters>> snapshot, ServerClock server)
    {
        var bodyPath = Path.Combine(dir, $"wrk-body-{transport.GetHashCode():x}.bin");
        await File.WriteAllBytesAsync(bodyPath, body);
        var script = Path.Combine(dir, $"wrk-{transport.GetHashCode():x}.lua");
        var lua = new StringBuilder();
        lua.AppendLine("wrk.method = \"POST\"");
        lua.AppendLine(CultureInfo.InvariantCulture, $"local f = io.open(\"{bodyPath}\", \"rb\")");
        lua.AppendLine("wrk.body = f:read(\"*all\")");
        lua.AppendLine("f:close()");
        foreach (var (name, value) in headers) lua.AppendLine(CultureInfo.InvariantCulture, $"wrk.headers[\"{name}\"] = \"{value}\"");
        await File.WriteAllTextAsync(script, lua.ToString());
        async Task<string?> Run(double s)
        {
            var psi = new ProcessStartInfo(Wrk, ["-t1", $"-c{concurrency}", $"-d{s.ToString("0.###", CultureInfo.InvariantCulture)}s", "--latency", "-s", script, url])
            { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            var output = await p.StandardOutput.ReadToEndAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(s + 30));
            return p.ExitCode == 0 ? output : null;
        }
        await Run(0.5);
        var before = await snapshot();
        server.Ms.Clear();
        server.Recording = true;
        var text = await Run(seconds);
        server.Recording = false;
        var inServer = server.Ms.ToList();
        inServer.Sort();
        var after = await snapshot();
        if (text is null) { Console.Error.WriteLine($"  {transport} x{concurrency}: wrk failed"); return null; }
        static double Ms(string v)
        {
            var m = System.Text.RegularExpressions.Regex.Match(v, @"^([\d.]+)(us|ms|s)$");
            double x = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            return m.Groups[2].Value switch { "us" => x / 1000, "ms" => x, _ => x * 1000 };
        }
        string Field(string pattern) => System.Text.RegularExpressions.Regex.Match(text, pattern, System.Text.RegularExpressions.RegexOptions.Multiline).Groups[1].Value;
        double p50 = Ms(Field(@"^\s+50%\s+(\S+)")), p99 = Ms(Field(@"^\s+99%\s+(\S+)"));
        double rate = double.Parse(Field(@"^Requests/sec:\s+([\d.]+)"), CultureInfo.InvariantCulture);
        long requests = long.Parse(Field(@"^\s+(\d+) requests in"), CultureInfo.InvariantCulture);
        var non2xx = Field(@"^\s+Non-2xx or 3xx responses: (\d+)");
        long errors = non2xx.Length > 0 ? long.Parse(non2xx, CultureInfo.InvariantCulture) : 0;
        double modelMs = (after.InferNs - before.InferNs) / 1e6 / Math.Max(1, after.Infer - before.Infer);
        double engineMs = (after.SuccessNs - before.SuccessNs) / 1e6 / Math.Max(1, after.Success - before.Success);
        Console.Error.WriteLine($"  {transport} x{concurrency}: {requests} requests, {errors} errors");
        return new Cell(transport, concurrency, p50, p99, rate, requests, errors, modelMs, engineMs, Percentile(inServer, 0.50));
    }

    static double Percentile(List<double> sorted, double q) =>
        sorted.Count == 0 ? double.NaN : sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(q * sorted.Count) - 1)];
}
