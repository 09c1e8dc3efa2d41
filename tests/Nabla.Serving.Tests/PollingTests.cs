using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>A server in model control mode POLL with a 150 ms poll interval and a per-version execution gate.</summary>
public sealed class PollFixture : ServerFixture
{
    /// <summary>"model/version" → gate that executions of that version wait on.</summary>
    public ConcurrentDictionary<string, TaskCompletionSource> Holds { get; } = new();
    public ConcurrentDictionary<string, TaskCompletionSource> Entered { get; } = new();

    protected override void Configure(ServingOptions options)
    {
        options.ModelControlMode = ModelControlMode.Poll;
        options.RepositoryPollInterval = TimeSpan.FromMilliseconds(150);
        foreach (var name in new[] { "poll_swap", "poll_broken", "poll_wait" })
        {
            var dir = Path.Combine(Repository.Root, name, "1");
            Directory.CreateDirectory(dir);
            File.Copy(Mnist.ModelPath, Path.Combine(dir, "model.onnx"));
            File.WriteAllText(Path.Combine(Repository.Root, name, "config.json"), Mnist.Config.Replace("\"mnist\"", $"\"{name}\""));
        }
        options.BeforeExecute = async (mv, ct) =>
        {
            var key = $"{mv.ModelName}/{mv.Version}";
            if (Entered.TryGetValue(key, out var e)) e.TrySetResult();
            if (Holds.TryGetValue(key, out var h)) await h.Task.WaitAsync(ct);
        };
    }

    public ModelRepository Repo => App.Services.GetRequiredService<ModelRepository>();

    public void AddVersion(string model, int version, byte[] bytes, bool marker)
    {
        TempRepository.WriteModel(Repository.Root, model, bytes, config: null, version);
        if (marker) File.WriteAllText(Path.Combine(Repository.Root, model, version.ToString(System.Globalization.CultureInfo.InvariantCulture), ModelRepository.ReadyMarker), "");
    }

    public async Task<List<JsonElement>> IndexRows(string model)
    {
        var (status, body) = await Json.Post(Http, "/v2/repository/index");
        Assert.Equal(200, status);
        return [.. body.EnumerateArray().Where(r => r.GetProperty("name").GetString() == model)];
    }

    /// <summary>Polls <paramref name="condition"/> every 50 ms for at most 10 s.</summary>
    public static async Task Until(Func<Task<bool>> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!await condition())
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"timed out waiting for {what}");
            await Task.Delay(50);
        }
    }
}

public sealed class PollingTests(PollFixture server) : IClassFixture<PollFixture>
{
    static async Task<(int Status, string Version)> Infer(HttpClient http, string model)
    {
        var (status, body) = await Json.Post(http, $"/v2/models/{model}/infer", Mnist.InferJson());
        if (status != 200) return (status, body.GetProperty("error").GetString()!);
        Mnist.AssertClose(Mnist.Expected, Json.Floats(body.GetProperty("outputs")[0].GetProperty("data")));
        return (status, body.GetProperty("model_version").GetString()!);
    }

    [Fact]
    public async Task NewVersionIsWarmedThenTakesTrafficWhileTheOldDrainsAndIsFreed()
    {
        const string model = "poll_swap";
        var v1 = server.Repo.Resolve(model, null);
        Assert.True(v1.WarmedUp);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Entered[$"{model}/1"] = entered;
        server.Holds[$"{model}/1"] = release;
        var inFlight = Infer(server.Http, model);
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

        server.AddVersion(model, 2, File.ReadAllBytes(Mnist.ModelPath), marker: true);
        await PollFixture.Until(async () => (await server.IndexRows(model)).Any(r => r.GetProperty("version").GetString() == "2" && r.GetProperty("state").GetString() == "READY"), "version 2 READY");
        // New requests go to version 2 while version 1 still runs the held one.
        Assert.Equal((200, "2"), await Infer(server.Http, model));
        var v2 = server.Repo.Resolve(model, null);
        Assert.Equal(2, v2.Version);
        Assert.True(v2.WarmedUp);
        Assert.True(v1.Retired);
        Assert.False(v1.Freed.IsCompleted);
        Assert.False(inFlight.IsCompleted);
        Assert.DoesNotContain(await server.IndexRows(model), r => r.GetProperty("version").GetString() == "1");

        server.Holds.TryRemove($"{model}/1", out _);
        release.SetResult();
        Assert.Equal((200, "1"), await inFlight.WaitAsync(TimeSpan.FromSeconds(10)));
        await v1.Freed.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(0, v1.InFlight);
        // The new version's statistics start at zero: the warm-up request is not counted.
        Assert.Equal(1, v2.Stats.Success);
        Assert.Equal(1, v2.Stats.Executions);
    }

    [Fact]
    public async Task BrokenNewVersionLeavesTheOldOneServing()
    {
        const string model = "poll_broken";
        server.AddVersion(model, 2, [0x08, 0x07, 0xFF, 0xFF, 0x12, 0x99, 0x01], marker: true);
        await PollFixture.Until(async () => (await server.IndexRows(model)).Any(r => r.GetProperty("version").GetString() == "2"), "version 2 in the index");
        var rows = await server.IndexRows(model);
        var v2 = rows.Single(r => r.GetProperty("version").GetString() == "2");
        Assert.Equal("UNAVAILABLE", v2.GetProperty("state").GetString());
        Assert.False(string.IsNullOrEmpty(v2.GetProperty("reason").GetString()));
        Assert.Equal("READY", rows.Single(r => r.GetProperty("version").GetString() == "1").GetProperty("state").GetString());
        Assert.Equal((200, "1"), await Infer(server.Http, model));
        // Later polls leave it so (the broken file is not retried until it changes).
        await Task.Delay(400);
        Assert.Equal((200, "1"), await Infer(server.Http, model));
        Json.AssertError(await Json.Get(server.Http, $"/v2/models/{model}/versions/2/ready"), 503);
    }

    [Fact]
    public async Task IncompleteVersionWaitsUntilItsFileIsStable()
    {
        const string model = "poll_wait";
        // A version folder with no model file yet: ignored.
        Directory.CreateDirectory(Path.Combine(server.Repository.Root, model, "2"));
        await Task.Delay(500);
        Assert.DoesNotContain(await server.IndexRows(model), r => r.GetProperty("version").GetString() == "2");
        Assert.Equal((200, "1"), await Infer(server.Http, model));
        // The file arrives without a marker: loaded once unchanged over a poll period.
        server.AddVersion(model, 2, File.ReadAllBytes(Mnist.ModelPath), marker: false);
        await PollFixture.Until(async () => (await Infer(server.Http, model)).Version == "2", "version 2 serving");
    }

    [Fact]
    public async Task NewModelFolderLoadsAndARemovedOneUnloads()
    {
        const string model = "poll_new";
        var dir = Path.Combine(server.Repository.Root, model);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), Mnist.Config.Replace("\"mnist\"", $"\"{model}\""));
        server.AddVersion(model, 1, File.ReadAllBytes(Mnist.ModelPath), marker: true);
        await PollFixture.Until(async () => (await Json.Get(server.Http, $"/v2/models/{model}/ready")).Item1 == 200, "the new model READY");
        Assert.Equal((200, "1"), await Infer(server.Http, model));
        var v1 = server.Repo.Resolve(model, null);

        Directory.Delete(dir, recursive: true);
        await PollFixture.Until(async () => (await Json.Post(server.Http, $"/v2/models/{model}/infer", Mnist.InferJson())).Item1 == 503, "the removed model unloaded");
        var row = (await server.IndexRows(model)).Single();
        Assert.Equal("UNAVAILABLE", row.GetProperty("state").GetString());
        Assert.Contains("removed", row.GetProperty("reason").GetString());
        await v1.Freed.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task LoadAndUnloadAreRefusedInPollMode()
    {
        Assert.Contains("poll", Json.AssertError(await Json.Post(server.Http, "/v2/repository/models/mnist/load"), 400), StringComparison.OrdinalIgnoreCase);
        Assert.Contains("poll", Json.AssertError(await Json.Post(server.Http, "/v2/repository/models/mnist/unload"), 400), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(200, (await Json.Post(server.Http, "/v2/models/mnist/infer", Mnist.InferJson())).Item1);
    }
}
