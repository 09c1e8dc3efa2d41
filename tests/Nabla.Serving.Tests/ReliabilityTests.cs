using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Nabla.Interop.Onnx.Export;
using Nabla.NN;
using Xunit;
using Xunit.Abstractions;

namespace Nabla.Serving.Tests;

/// <summary>Poll mode every 100 ms with one model, <c>swap_load</c>, whose versions the test publishes under load.</summary>
public sealed class SwapLoadFixture : ServerFixture
{
    protected override void Configure(ServingOptions options)
    {
        options.ModelControlMode = ModelControlMode.Poll;
        options.RepositoryPollInterval = TimeSpan.FromMilliseconds(100);
        AddVersion(1);
        File.WriteAllText(Path.Combine(Repository.Root, "swap_load", "config.json"), Mnist.Config.Replace("\"mnist\"", "\"swap_load\""));
    }

    public void AddVersion(int version)
    {
        var dir = Path.Combine(Repository.Root, "swap_load", version.ToString(CultureInfo.InvariantCulture));
        Directory.CreateDirectory(dir);
        File.Copy(Mnist.ModelPath, Path.Combine(dir, "model.onnx"));
        File.WriteAllText(Path.Combine(dir, ModelRepository.ReadyMarker), "");
    }
}

/// <summary>Issue 7 item 10 (b): versions swapped by polling while 4 clients keep sending; no request may fail.</summary>
[Collection("Reliability")]
public sealed class SwapUnderLoadTests(SwapLoadFixture server, ITestOutputHelper output) : IClassFixture<SwapLoadFixture>
{
    [Fact]
    public async Task TwoVersionSwapsDuringSteadyLoadFailNoRequest()
    {
        var failures = new ConcurrentQueue<string>();
        var versions = new ConcurrentDictionary<string, int>();
        int total = 0;
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        string body = Mnist.InferJson();
        var expected = Mnist.Expected;
        async Task Client()
        {
            // Bounded by count and by time (the stop token, and a hard 20 s cap).
            for (int n = 0; n < 20_000 && !stop.IsCancellationRequested && clock.Elapsed < TimeSpan.FromSeconds(20); n++)
            {
                var (status, reply) = await Json.Post(server.Http, "/v2/models/swap_load/infer", body);
                Interlocked.Increment(ref total);
                if (status != 200) { failures.Enqueue($"{status}: {reply}"); continue; }
                var got = Json.Floats(reply.GetProperty("outputs")[0].GetProperty("data"));
                if (got.Length != expected.Length || got.Zip(expected).Any(p => Math.Abs(p.First - p.Second) > 1e-3f)) failures.Enqueue("wrong output");
                versions.AddOrUpdate(reply.GetProperty("model_version").GetString()!, 1, (_, c) => c + 1);
            }
        }
        var clients = Enumerable.Range(0, 4).Select(_ => Task.Run(Client)).ToList();

        async Task WaitServing(string version)
        {
            var sw = Stopwatch.StartNew();
            while (!versions.ContainsKey(version) && sw.Elapsed < TimeSpan.FromSeconds(10) && failures.IsEmpty) await Task.Delay(20);
        }
        await Task.Delay(500);
        server.AddVersion(2);
        await WaitServing("2");
        var swap1 = clock.Elapsed;
        await Task.Delay(700);
        server.AddVersion(3);
        await WaitServing("3");
        var swap2 = clock.Elapsed;
        // Keep the load on a little after the last swap, so the retired version drains under traffic.
        await Task.Delay(TimeSpan.FromSeconds(Math.Max(0.5, 3 - clock.Elapsed.TotalSeconds)));
        stop.Cancel();
        await Task.WhenAll(clients).WaitAsync(TimeSpan.FromSeconds(30));
        output.WriteLine($"{total} requests in {clock.Elapsed.TotalSeconds:F1} s; v2 serving at {swap1.TotalSeconds:F2} s, v3 at {swap2.TotalSeconds:F2} s; per version: " +
            string.Join(", ", versions.OrderBy(kv => kv.Key).Select(kv => $"v{kv.Key}={kv.Value}")));
        Assert.True(failures.IsEmpty, $"{failures.Count} of {total} requests failed, e.g. {string.Join(" | ", failures.Take(5))}");
        Assert.True(versions.ContainsKey("1") && versions.ContainsKey("2") && versions.ContainsKey("3"), "not every version served traffic");
        var (s, last) = await Json.Post(server.Http, "/v2/models/swap_load/infer", body);
        Assert.Equal(200, s);
        Assert.Equal("3", last.GetProperty("model_version").GetString());
    }
}

/// <summary>Issue 7 item 10 (d): 200 unload/load cycles must not leak.</summary>
[Collection("Reliability")]
public sealed class LoadUnloadLeakTests(ServerFixture server, ITestOutputHelper output) : IClassFixture<ServerFixture>
{
    [Fact]
    public async Task TwoHundredUnloadLoadCyclesGrowMemoryByLessThan50MB()
    {
        const string model = "mnist_reload";
        var http = server.Http;
        var clock = Stopwatch.StartNew();
        async Task Cycle(int i)
        {
            Assert.Equal(200, (await Json.Post(http, $"/v2/repository/models/{model}/unload")).Item1);
            Assert.Equal(200, (await Json.Post(http, $"/v2/repository/models/{model}/load", "{}")).Item1);
            if (i % 20 == 0) Assert.Equal(200, (await Json.Post(http, $"/v2/models/{model}/infer", Mnist.InferJson())).Item1);
        }
        for (int i = 0; i < 10; i++) await Cycle(i);
        long managed0 = GC.GetTotalMemory(forceFullCollection: true);
        long ws0 = Environment.WorkingSet;
        int done = 0;
        long managedHalf = 0;
        for (; done < 200 && clock.Elapsed < TimeSpan.FromSeconds(60); done++)
        {
            await Cycle(done);
            if (done == 99) managedHalf = GC.GetTotalMemory(forceFullCollection: true);
        }
        long managed1 = GC.GetTotalMemory(forceFullCollection: true);
        long ws1 = Environment.WorkingSet;
        double mb(long b) => b / (1024.0 * 1024.0);
        output.WriteLine($"{done} cycles in {clock.Elapsed.TotalSeconds:F1} s; managed {mb(managed0):F1} → {mb(managedHalf):F1} (100 cycles) → {mb(managed1):F1} MB ({mb(managed1 - managed0):+0.0;-0.0} MB); " +
            $"working set {mb(ws0):F1} → {mb(ws1):F1} MB ({mb(ws1 - ws0):+0.0;-0.0} MB)");
        Assert.Equal(200, done);
        Assert.True(managed1 - managed0 < 50L << 20, $"managed memory grew by {mb(managed1 - managed0):F1} MB");
        var (status, body) = await Json.Post(http, $"/v2/models/{model}/infer", Mnist.InferJson());
        Assert.Equal(200, status);
        Mnist.AssertClose(Mnist.Expected, Json.Floats(body.GetProperty("outputs")[0].GetProperty("data")));
    }
}

/// <summary>
/// Issue 7 item 10 (c): the real <c>nabla serve</c> process gets SIGTERM while one request runs and five wait in the
/// batching queue (max_batch_size 1, so each runs alone); all six must complete with 200 and the process exit 0.
/// The process has no test hook, so "running" is made real with a model slow enough to watch: five wide 3×3
/// convolutions over 128×128, and the queue is observed through <c>nabla_inference_pending_request_count</c> on /metrics.
/// </summary>
[Collection("Reliability")]
public sealed class ProcessDrainTests(ITestOutputHelper output) : IDisposable
{
    // NOTE: about 68 GFLOP per request (3×3 convolutions 64→256→256→256→256→64 on 128×128), so that a request lasts
    // several hundred milliseconds even with the fused, prepacked convolutions, while its 4 MiB body stays cheap to
    // parse: the five other requests must reach the queue while the first runs (with 8 convolutions of 64 channels a
    // request took ~60 ms and, under load, the others were still being read when it finished).
    const int C = 64, H = 128, W = 128, Wide = 256;
    readonly string root = Path.Combine(Path.GetTempPath(), "nabla-serving-drain-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    void WriteSlowModel()
    {
        // Slow enough that one running and five queued requests stay visible while the metrics are polled. With 3×3
        // layers (Winograd) a request took about 0.3 s once the server faulted in less memory (ConserveMemory 4), and under
        // CI load the queue drained before it was seen; 5×5 layers take the direct GEMM path, ~54 GFLOP each.
        var layers = new List<Module> { new Conv2d(C, Wide, 3, padding: 1) };
        for (int i = 0; i < 4; i++) layers.Add(new Conv2d(Wide, Wide, 5, padding: 2));
        layers.Add(new Conv2d(Wide, C, 3, padding: 1));
        var m = new Sequential(layers.ToArray());
        TempRepository.WriteModel(root, "slow", OnnxExporter.ExportToBytes(m, Tensor.Zeros([1, C, H, W])), $$"""
            {
              "name": "slow", "max_batch_size": 1,
              "input": [ { "name": "input", "data_type": "TYPE_FP32", "dims": [ {{C}}, {{H}}, {{W}} ] } ],
              "output": [ { "name": "output", "data_type": "TYPE_FP32", "dims": [ {{C}}, {{H}}, {{W}} ] } ],
              "dynamic_batching": { "default_queue_policy": { "max_queue_size": 16 } }
            }
            """);
    }

    static async Task<int> Pending(HttpClient http)
    {
        var text = await http.GetStringAsync("/metrics");
        var m = Regex.Match(text, @"^nabla_inference_pending_request_count\{[^}]*model=""slow""[^}]*\} (\d+)", RegexOptions.Multiline);
        return m.Success ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : -1;
    }

    [Fact]
    public async Task SigtermWithOneRunningAndFiveQueuedCompletesAllSix()
    {
        WriteSlowModel();
        using var serve = await ServeProcess.StartAsync(root, ["--drain-timeout", "30"], TimeSpan.FromSeconds(60));
        var p = serve.Process;
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{serve.RestPort}"), Timeout = TimeSpan.FromSeconds(60) };
            var deadline = Stopwatch.StartNew();
            while (deadline.Elapsed < TimeSpan.FromSeconds(60) && (await Json.Get(http, "/v2/health/ready")).Item1 != 200) await Task.Delay(50);

            // One binary request: JSON header, then the raw FP32 image; the output comes back binary too.
            var header = System.Text.Encoding.UTF8.GetBytes($$$"""{"inputs":[{"name":"input","shape":[1,{{{C}}},{{{H}}},{{{W}}}],"datatype":"FP32","parameters":{"binary_data_size":{{{C * H * W * 4}}}}}],"parameters":{"binary_data_output":true}}""");
            var body = new byte[header.Length + C * H * W * 4];
            header.CopyTo(body, 0);
            async Task<int> Send()
            {
                using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/slow/infer") { Content = new ByteArrayContent(body) };
                req.Headers.Add(RestApi.HeaderLengthName, header.Length.ToString(CultureInfo.InvariantCulture));
                using var resp = await http.SendAsync(req);
                await resp.Content.ReadAsByteArrayAsync();
                return (int)resp.StatusCode;
            }
            var one = Stopwatch.StartNew();
            Assert.Equal(200, await Send());
            output.WriteLine($"one request alone: {one.ElapsedMilliseconds} ms");

            var six = Enumerable.Range(0, 6).Select(_ => Send()).ToList();
            var watch = Stopwatch.StartNew();
            int pending = -1;
            while (watch.Elapsed < TimeSpan.FromSeconds(20) && (pending = await Pending(http)) != 5) await Task.Delay(5);
            Assert.True(pending == 5, $"never saw 1 running + 5 queued (pending {pending})");
            Assert.DoesNotContain(six, t => t.IsCompleted);

            var clock = Stopwatch.StartNew();
            await serve.TerminateAsync();
            var statuses = await Task.WhenAll(six).WaitAsync(TimeSpan.FromSeconds(40));
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(40));
            output.WriteLine($"after SIGTERM: six answered {string.Join(",", statuses)}, process exited {p.ExitCode} after {clock.ElapsedMilliseconds} ms");
            Assert.All(statuses, s => Assert.Equal(200, s));
            Assert.Equal(0, p.ExitCode);
        }
        catch
        {
            output.WriteLine(serve.Output);
            throw;
        }
    }
}
