using System.Diagnostics;
using System.Text.RegularExpressions;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Nabla.Serving.Grpc;
using Nabla.Serving.Health;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>Unload and load over REST and gRPC (on their own server, so other classes never see the model vanish).</summary>
public sealed class LoadUnloadTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    [Fact]
    public async Task UnloadThenLoadOverRest()
    {
        var http = server.Http;
        Assert.Equal(200, (await Json.Post(http, "/v2/models/mnist_reload/infer", Mnist.InferJson())).Item1);
        var (s1, unloaded) = await Json.Post(http, "/v2/repository/models/mnist_reload/unload");
        Assert.Equal(200, s1);
        Assert.True(unloaded.GetProperty("unload").GetBoolean());
        Assert.Contains("unloaded", Json.AssertError(await Json.Post(http, "/v2/models/mnist_reload/infer", Mnist.InferJson()), 503));
        Json.AssertError(await Json.Get(http, "/v2/models/mnist_reload/ready"), 503);
        var (_, index) = await Json.Post(http, "/v2/repository/index");
        var row = index.EnumerateArray().Single(r => r.GetProperty("name").GetString() == "mnist_reload");
        Assert.Equal("UNAVAILABLE", row.GetProperty("state").GetString());

        var (s2, loaded) = await Json.Post(http, "/v2/repository/models/mnist_reload/load", "{}");
        Assert.Equal(200, s2);
        Assert.True(loaded.GetProperty("load").GetBoolean());
        var (s3, body) = await Json.Post(http, "/v2/models/mnist_reload/infer", Mnist.InferJson());
        Assert.Equal(200, s3);
        Mnist.AssertClose(Mnist.Expected, Json.Floats(body.GetProperty("outputs")[0].GetProperty("data")));
        // Other models were untouched.
        Assert.Equal(200, (await Json.Post(http, "/v2/models/mnist/infer", Mnist.InferJson())).Item1);
    }

    [Fact]
    public async Task LoadWithConfigOverrideAndFailedReloadKeepsServing()
    {
        var http = server.Http;
        // A config override that breaks the model: the reload fails, the loaded version keeps serving.
        var bad = System.Text.Json.JsonSerializer.Serialize(Mnist.Config.Replace("\"mnist\"", "\"mnist\"").Replace("Input3", "Missing"));
        var r = await Json.Post(http, "/v2/repository/models/mnist/load", "{\"parameters\": {\"config\": " + bad + "}}");
        Assert.Contains("keep serving", Json.AssertError(r, 400));
        Assert.Equal(200, (await Json.Post(http, "/v2/models/mnist/infer", Mnist.InferJson())).Item1);
    }

    [Fact]
    public async Task UnloadThenLoadOverGrpc()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        await client.RepositoryModelUnloadAsync(new RepositoryModelUnloadRequest { ModelName = "mnist_auto" });
        Assert.False((await client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist_auto" })).Ready);
        var req = new ModelInferRequest { ModelName = "mnist_auto", Inputs = { new ModelInferRequest.Types.InferInputTensor { Name = "Input3", Datatype = "FP32", Shape = { 1, 1, 28, 28 }, Contents = new InferTensorContents { Fp32Contents = { Mnist.Input } } } } };
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.ModelInferAsync(req));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        await client.RepositoryModelLoadAsync(new RepositoryModelLoadRequest { ModelName = "mnist_auto" });
        Assert.True((await client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist_auto" })).Ready);
        var r = await client.ModelInferAsync(req);
        Mnist.AssertClose(Mnist.Expected, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(r.RawOutputContents[0].Span).ToArray());
    }
}

/// <summary>A server whose executions wait on a gate, with a pre-stop delay, to watch a drain step by step.</summary>
public sealed class GatedServerFixture : ServerFixture
{
    public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    protected override void Configure(ServingOptions options)
    {
        options.PreStopDelay = TimeSpan.FromSeconds(1.5);
        options.BeforeExecute = async (mv, ct) =>
        {
            if (mv.ModelName != "mnist_reload") return;
            Entered.TrySetResult();
            await Release.Task.WaitAsync(ct);
        };
    }
}

public sealed class DrainTests(GatedServerFixture server) : IClassFixture<GatedServerFixture>
{
    [Fact]
    public async Task ShutdownFlipsReadinessAndLetsInFlightRequestsFinish()
    {
        var http = server.Http;
        var health = new Health.Health.HealthClient(server.Channel);
        var inFlight = Json.Post(http, "/v2/models/mnist_reload/infer", Mnist.InferJson(id: "in-flight"));
        await server.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var clock = Stopwatch.StartNew();
        var stopping = server.App.StopAsync();
        var state = server.App.Services.GetRequiredService<ServerState>();
        // Readiness turns false at once; during the pre-stop delay inference is still served.
        while (state.Ready && clock.ElapsedMilliseconds < 1000) await Task.Delay(5);
        Assert.False(state.Ready);
        Assert.True(clock.ElapsedMilliseconds < 500, $"readiness took {clock.ElapsedMilliseconds} ms to flip");
        Json.AssertError(await Json.Get(http, "/v2/health/ready"), 503);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(200, (await Json.Post(http, "/v2/models/mnist/infer", Mnist.InferJson())).Item1);

        // After the delay: draining; the request in flight still completes.
        while (!state.Draining && clock.ElapsedMilliseconds < 5000) await Task.Delay(10);
        Assert.True(state.Draining);
        Assert.False(stopping.IsCompleted);
        server.Release.SetResult();
        var (status, body) = await inFlight;
        Assert.Equal(200, status);
        Assert.Equal("in-flight", body.GetProperty("id").GetString());
        await stopping.WaitAsync(TimeSpan.FromSeconds(15));
    }
}

/// <summary>The real <c>nabla serve</c> process: ports from its banner, a REST call, then SIGTERM and a clean exit.</summary>
public sealed class ProcessTests : IDisposable
{
    readonly TempRepository repo = new();

    public void Dispose() => repo.Dispose();

    [Fact]
    public async Task ServeAnswersThenExitsCleanlyOnSigterm()
    {
        using var serve = await ServeProcess.StartAsync(repo.Root, ["--drain-timeout", "5", "--model-control-mode", "poll", "--repository-poll-secs", "0.2"],
            TimeSpan.FromSeconds(60), new Dictionary<string, string> { ["NABLA_SERVE_TOKEN"] = "process-token" });
        var p = serve.Process;
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{serve.RestPort}") };
            var deadline = DateTime.UtcNow.AddSeconds(60);
            int ready = 0;
            while (DateTime.UtcNow < deadline && (ready = (await Json.Get(http, "/v2/health/ready")).Item1) != 200) await Task.Delay(50);
            Assert.Equal(200, ready);
            var (status, body) = await Json.Post(http, "/v2/models/mnist/infer", Mnist.InferJson());
            Assert.Equal(200, status);
            Mnist.AssertClose(Mnist.Expected, Json.Floats(body.GetProperty("outputs")[0].GetProperty("data")));
            // NABLA_SERVE_TOKEN guards the repository endpoints; --model-control-mode poll refuses explicit loads.
            Assert.Equal(401, (await Json.Post(http, "/v2/repository/index")).Item1);
            http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "process-token");
            Assert.Equal(200, (await Json.Post(http, "/v2/repository/index")).Item1);
            Assert.Contains("poll", Json.AssertError(await Json.Post(http, "/v2/repository/models/mnist/load"), 400), StringComparison.OrdinalIgnoreCase);

            var clock = Stopwatch.StartNew();
            await serve.TerminateAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(0, p.ExitCode);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(6), $"exit took {clock.Elapsed}");
        }
        catch
        {
            Console.Error.WriteLine(serve.Output);
            throw;
        }
    }
}
