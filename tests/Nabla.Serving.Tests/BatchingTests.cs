using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Nabla.Interop.Onnx.Export;
using Nabla.NN;
using Nabla.Serving.Grpc;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>A Linear(4 → 3) exported to ONNX with a dynamic batch dim (input "input", output "output"), and its reference.</summary>
public static class LinearModel
{
    static readonly Lazy<(byte[] Onnx, float[] W, float[] B)> Built = new(() =>
    {
        var m = new Linear(4, 3);
        return (OnnxExporter.ExportToBytes(m, Tensor.Zeros([1, 4])), m.Weight.ToArray<float>(), m.Bias!.ToArray<float>());
    });

    public static byte[] Onnx => Built.Value.Onnx;

    /// <summary>y = x·Wᵀ + b for one row of 4.</summary>
    public static float[] Expected(float[] x)
    {
        var (_, w, b) = Built.Value;
        var y = new float[3];
        for (int j = 0; j < 3; j++)
        {
            float s = b[j];
            for (int i = 0; i < 4; i++) s += x[i] * w[j * 4 + i];
            y[j] = s;
        }
        return y;
    }

    /// <summary>config.json of a batching model; <paramref name="batching"/> is the dynamic_batching body.</summary>
    public static string Config(string name, string batching) => $$"""
        {
          "name": "{{name}}", "max_batch_size": 8,
          "input": [ { "name": "input", "data_type": "TYPE_FP32", "dims": [ 4 ] } ],
          "output": [ { "name": "output", "data_type": "TYPE_FP32", "dims": [ 3 ] } ],
          "dynamic_batching": {{batching}}
        }
        """;

    public static void Write(string root, string name, string config, int version = 1) => TempRepository.WriteModel(root, name, Onnx, config, version);

    public static float[] Row(int i) => [i, -0.5f * i, 1 + i % 3, 0.25f];

    public static string InferJson(float[] x) =>
        $$"""{ "inputs": [ { "name": "input", "shape": [1, 4], "datatype": "FP32", "data": [{{string.Join(",", x.Select(v => v.ToString("R", CultureInfo.InvariantCulture)))}}] } ] }""";
}

/// <summary>
/// A server with batching models and an execution hook: it counts executions per model, signals entry, and holds
/// executions of a model while the test keeps its gate closed.
/// </summary>
public sealed class BatchingFixture : ServerFixture
{
    public ConcurrentDictionary<string, int> Executions { get; } = new();
    public ConcurrentDictionary<string, TaskCompletionSource> Entered { get; } = new();
    public ConcurrentDictionary<string, TaskCompletionSource> Holds { get; } = new();

    protected override void Configure(ServingOptions options)
    {
        var root = Repository.Root;
        LinearModel.Write(root, "lin_batch", LinearModel.Config("lin_batch", """{ "max_queue_delay_microseconds": 20000, "preferred_batch_size": [ 4, 8 ] }"""));
        LinearModel.Write(root, "lin_queue", LinearModel.Config("lin_queue", """{ "default_queue_policy": { "max_queue_size": 4 } }"""));
        LinearModel.Write(root, "lin_queue8", LinearModel.Config("lin_queue8", """{ "default_queue_policy": { "max_queue_size": 8 } }"""));
        LinearModel.Write(root, "lin_timeout", LinearModel.Config("lin_timeout", """{ "default_queue_policy": { "default_timeout_microseconds": 100000, "timeout_action": "REJECT" } }"""));
        LinearModel.Write(root, "lin_cancel", LinearModel.Config("lin_cancel", "{}"));
        LinearModel.Write(root, "lin_misc", LinearModel.Config("lin_misc", """{ "max_queue_delay_microseconds": 20000 }"""));
        LinearModel.Write(root, "lin_metrics", LinearModel.Config("lin_metrics", """{ "max_queue_delay_microseconds": 5000 }"""));
        options.BeforeExecute = async (mv, ct) =>
        {
            Executions.AddOrUpdate(mv.ModelName, 1, (_, n) => n + 1);
            if (Entered.TryGetValue(mv.ModelName, out var e)) e.TrySetResult();
            if (Holds.TryGetValue(mv.ModelName, out var h)) await h.Task.WaitAsync(ct);
        };
    }

    public ModelVersion Version(string model) => App.Services.GetRequiredService<ModelRepository>().Resolve(model, null);

    /// <summary>Closes a model's gate and returns (entered, release).</summary>
    public (Task Entered, TaskCompletionSource Release) Hold(string model)
    {
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Entered[model] = entered;
        Holds[model] = release;
        return (entered.Task, release);
    }

    public void Open(string model, TaskCompletionSource release)
    {
        Holds.TryRemove(model, out _);
        Entered.TryRemove(model, out _);
        release.TrySetResult();
    }

    /// <summary>Waits (at most 10 s) until the model's batcher holds <paramref name="count"/> queued requests.</summary>
    public async Task WaitPending(string model, int count)
    {
        var batcher = Version(model).Batcher!;
        var sw = Stopwatch.StartNew();
        while (batcher.Pending != count)
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"{model}: {batcher.Pending} requests queued, expected {count}");
            await Task.Delay(10);
        }
    }
}

public sealed class BatchingTests(BatchingFixture server) : IClassFixture<BatchingFixture>
{
    static async Task<(int Status, float[] Output, string Version)> Infer(HttpClient http, string model, float[] x, CancellationToken ct = default)
    {
        using var content = new StringContent(LinearModel.InferJson(x), System.Text.Encoding.UTF8, "application/json");
        using var resp = await http.PostAsync($"/v2/models/{model}/infer", content, ct);
        var body = JsonDocument.Parse(await resp.Content.ReadAsStringAsync(ct)).RootElement;
        if (!resp.IsSuccessStatusCode) return ((int)resp.StatusCode, [], body.GetProperty("error").GetString()!);
        var o = body.GetProperty("outputs")[0];
        Assert.Equal([1, 3], o.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()));
        return (200, Json.Floats(o.GetProperty("data")), body.GetProperty("model_version").GetString()!);
    }

    static async Task<JsonElement> Stats(HttpClient http, string model)
    {
        var (status, body) = await Json.Get(http, $"/v2/models/{model}/stats");
        Assert.Equal(200, status);
        return body.GetProperty("model_stats")[0];
    }

    [Fact]
    public async Task ConcurrentRequestsShareExecutionsAndEachGetsItsOwnOutput()
    {
        const string model = "lin_batch";
        var (entered, release) = server.Hold(model);
        var first = Infer(server.Http, model, LinearModel.Row(0));
        await entered.WaitAsync(TimeSpan.FromSeconds(10));
        // While the first execution is held, 15 more requests queue up; then they run in merged batches.
        var rest = Enumerable.Range(1, 15).Select(i => Infer(server.Http, model, LinearModel.Row(i))).ToList();
        await server.WaitPending(model, 15);
        server.Open(model, release);
        var all = await Task.WhenAll(rest.Prepend(first)).WaitAsync(TimeSpan.FromSeconds(20));
        for (int i = 0; i < all.Length; i++)
        {
            Assert.Equal(200, all[i].Status);
            Mnist.AssertClose(LinearModel.Expected(LinearModel.Row(i)), all[i].Output, 1e-5f);
        }
        var stats = await Stats(server.Http, model);
        long inferences = stats.GetProperty("inference_count").GetInt64(), executions = stats.GetProperty("execution_count").GetInt64();
        Assert.Equal(16, inferences);
        // 1 held, then 8 (max: the ninth does not fit), 4 (the largest preferred size of the 7 left), 3 (after the delay).
        Assert.Equal(4, executions);
        Assert.Equal(16, stats.GetProperty("inference_stats").GetProperty("success").GetProperty("count").GetInt64());
        var batchStats = stats.GetProperty("batch_stats").EnumerateArray().ToList();
        Assert.Equal([1L, 3L, 4L, 8L], batchStats.Select(b => b.GetProperty("batch_size").GetInt64()));
        Assert.Equal(executions, batchStats.Sum(b => b.GetProperty("compute_infer").GetProperty("count").GetInt64()));
        Assert.Equal(inferences, batchStats.Sum(b => b.GetProperty("batch_size").GetInt64() * b.GetProperty("compute_infer").GetProperty("count").GetInt64()));
    }

    [Fact]
    public async Task DelayExpiryDispatchesAPartialBatch()
    {
        // No gate: two requests within the 20 ms window form a batch of 2 or run alone; either way both answer, and
        // a lone request is not held longer than about the delay.
        var sw = Stopwatch.StartNew();
        var r = await Infer(server.Http, "lin_misc", LinearModel.Row(3));
        Assert.Equal(200, r.Status);
        Mnist.AssertClose(LinearModel.Expected(LinearModel.Row(3)), r.Output, 1e-5f);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"a lone request took {sw.Elapsed}");
    }

    [Fact]
    public async Task FullQueueRejectsAtOnceOverRestAndGrpc()
    {
        const string model = "lin_queue";
        var (entered, release) = server.Hold(model);
        var running = Infer(server.Http, model, LinearModel.Row(0));
        await entered.WaitAsync(TimeSpan.FromSeconds(10));
        var queued = Enumerable.Range(1, 4).Select(i => Infer(server.Http, model, LinearModel.Row(i))).ToList();
        await server.WaitPending(model, 4);

        var sw = Stopwatch.StartNew();
        using (var content = new StringContent(LinearModel.InferJson(LinearModel.Row(5)), System.Text.Encoding.UTF8, "application/json"))
        using (var resp = await server.Http.PostAsync($"/v2/models/{model}/infer", content))
        {
            Assert.Equal(503, (int)resp.StatusCode);
            Assert.True(resp.Headers.Contains("Retry-After"));
            Assert.Contains("maximum queue size", await resp.Content.ReadAsStringAsync());
        }
        Assert.Equal(503, (await Infer(server.Http, model, LinearModel.Row(6))).Status);
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var req = new ModelInferRequest
        {
            ModelName = model,
            Inputs = { new ModelInferRequest.Types.InferInputTensor { Name = "input", Datatype = "FP32", Shape = { 1, 4 }, Contents = new InferTensorContents { Fp32Contents = { LinearModel.Row(7) } } } },
        };
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.ModelInferAsync(req));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"rejections took {sw.Elapsed}");

        server.Open(model, release);
        var results = await Task.WhenAll(queued.Prepend(running)).WaitAsync(TimeSpan.FromSeconds(20));
        for (int i = 0; i < results.Length; i++)
        {
            Assert.Equal(200, results[i].Status);
            Mnist.AssertClose(LinearModel.Expected(LinearModel.Row(i)), results[i].Output, 1e-5f);
        }
        var stats = server.Version(model).Stats;
        Assert.Equal(3, stats.FailuresFor(FailureReason.Rejected));
        Assert.Equal(5, stats.Success);
        Assert.Equal(2, stats.Executions);
    }

    [Fact]
    public async Task TenAtOnceIntoAQueueOfEightRejectsExactlyTwo()
    {
        const string model = "lin_queue8";
        var (entered, release) = server.Hold(model);
        var running = Infer(server.Http, model, LinearModel.Row(0));
        await entered.WaitAsync(TimeSpan.FromSeconds(10));
        var burst = Enumerable.Range(1, 10).Select(i => Infer(server.Http, model, LinearModel.Row(i))).ToList();
        // The two rejections answer while the model is still held.
        var sw = Stopwatch.StartNew();
        while (burst.Count(t => t.IsCompleted) < 2 && sw.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(10);
        await server.WaitPending(model, 8);
        Assert.Equal(2, burst.Count(t => t.IsCompletedSuccessfully && t.Result.Status == 503));
        server.Open(model, release);
        var results = await Task.WhenAll(burst).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(8, results.Count(r => r.Status == 200));
        Assert.Equal(2, results.Count(r => r.Status == 503));
        Assert.Equal(200, (await running).Status);
        Assert.Equal(2, server.Version(model).Stats.FailuresFor(FailureReason.Rejected));
    }

    [Fact]
    public async Task QueueTimeoutRejectsWithoutExecuting()
    {
        const string model = "lin_timeout";
        var (entered, release) = server.Hold(model);
        var running = Infer(server.Http, model, LinearModel.Row(0));
        await entered.WaitAsync(TimeSpan.FromSeconds(10));
        var sw = Stopwatch.StartNew();
        var timedOut = await Infer(server.Http, model, LinearModel.Row(1));
        Assert.Equal(503, timedOut.Status);
        Assert.Contains("timed out in the queue", timedOut.Version);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(3), $"the timeout answered after {sw.Elapsed}");
        server.Open(model, release);
        Assert.Equal(200, (await running).Status);
        await Task.Delay(100);
        Assert.Equal(1, server.Executions[model]);
        var stats = server.Version(model).Stats;
        Assert.Equal(1, stats.Executions);
        Assert.Equal(1, stats.FailuresFor(FailureReason.Rejected));
    }

    [Fact]
    public async Task CancelledAndExpiredRequestsAreNeverExecuted()
    {
        const string model = "lin_cancel";
        var (entered, release) = server.Hold(model);
        var running = Infer(server.Http, model, LinearModel.Row(0));
        await entered.WaitAsync(TimeSpan.FromSeconds(10));

        // A REST client that hangs up while its request is queued.
        using var cts = new CancellationTokenSource();
        var abandoned = Infer(server.Http, model, LinearModel.Row(1), cts.Token);
        await server.WaitPending(model, 1);
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
        await server.WaitPending(model, 0);

        // A gRPC call whose deadline passes while it is queued.
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var req = new ModelInferRequest
        {
            ModelName = model,
            Inputs = { new ModelInferRequest.Types.InferInputTensor { Name = "input", Datatype = "FP32", Shape = { 1, 4 }, Contents = new InferTensorContents { Fp32Contents = { LinearModel.Row(2) } } } },
        };
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.ModelInferAsync(req, deadline: DateTime.UtcNow.AddMilliseconds(300)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        await server.WaitPending(model, 0);

        server.Open(model, release);
        Assert.Equal(200, (await running).Status);
        await Task.Delay(150);
        Assert.Equal(1, server.Executions[model]);
        var stats = server.Version(model).Stats;
        Assert.Equal(1, stats.Executions);
        Assert.Equal(1, stats.Inferences);
        var sw = Stopwatch.StartNew();
        while (stats.FailuresFor(FailureReason.Canceled) < 2 && sw.Elapsed < TimeSpan.FromSeconds(5)) await Task.Delay(10);
        Assert.Equal(2, stats.FailuresFor(FailureReason.Canceled));
    }

    [Fact]
    public async Task MixedBatchSizesAndGrpcShareTheBatcher()
    {
        const string model = "lin_misc";
        // A batch-3 request over gRPC: its three rows come back in order.
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        float[][] rows = [LinearModel.Row(10), LinearModel.Row(11), LinearModel.Row(12)];
        var req = new ModelInferRequest
        {
            ModelName = model,
            Inputs = { new ModelInferRequest.Types.InferInputTensor { Name = "input", Datatype = "FP32", Shape = { 3, 4 }, Contents = new InferTensorContents { Fp32Contents = { rows.SelectMany(r => r) } } } },
        };
        var resp = await client.ModelInferAsync(req);
        Assert.Equal([3L, 3L], resp.Outputs[0].Shape);
        var y = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(resp.RawOutputContents[0].Span).ToArray();
        for (int i = 0; i < 3; i++) Mnist.AssertClose(LinearModel.Expected(rows[i]), y[(i * 3)..(i * 3 + 3)], 1e-5f);
    }
}
