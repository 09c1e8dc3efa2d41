using System.Text.Json;
using Nabla.Serving.Grpc;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>
/// mnist with 4 instances and a Linear model with 2 instances behind a dynamic batcher. While <see cref="Rendezvous"/>
/// is armed, every execution waits inside the hook until <see cref="Rendezvous"/> executions are inside together (or
/// 30 s pass), so a test completes only if that many really ran at the same time.
/// </summary>
public sealed class InstanceServerFixture : ServerFixture
{
    public volatile int Rendezvous;
    int inside, maxInside;
    TaskCompletionSource all = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public int MaxInside => Volatile.Read(ref maxInside);

    public void Arm(int n)
    {
        all = new(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref maxInside, 0);
        Rendezvous = n;
    }

    protected override void Configure(ServingOptions options)
    {
        var dir = Path.Combine(options.ModelRepository, "mnist_x4", "1");
        Directory.CreateDirectory(dir);
        File.Copy(Mnist.ModelPath, Path.Combine(dir, "model.onnx"));
        File.WriteAllText(Path.Combine(options.ModelRepository, "mnist_x4", "config.json"),
            Mnist.Config.Replace("\"mnist\"", "\"mnist_x4\"").Replace("\"max_batch_size\": 0,", "\"max_batch_size\": 0, \"instance_group\": [ { \"count\": 3, \"kind\": \"KIND_CPU\" }, { \"count\": 1 } ],"));
        LinearModel.Write(options.ModelRepository, "linear_x2",
            LinearModel.Config("linear_x2", """{ "max_queue_delay_microseconds": 0 }""").Replace("\"max_batch_size\": 8,", "\"max_batch_size\": 8, \"instance_count\": 2,"));
        options.BeforeExecute = async (mv, ct) =>
        {
            int n = Rendezvous;
            if (n == 0) return;
            int now = Interlocked.Increment(ref inside);
            int seen;
            while ((seen = Volatile.Read(ref maxInside)) < now && Interlocked.CompareExchange(ref maxInside, now, seen) != seen) { }
            if (now >= n) all.TrySetResult();
            try { await all.Task.WaitAsync(TimeSpan.FromSeconds(30), ct); }
            catch (TimeoutException) { }
            finally { Interlocked.Decrement(ref inside); }
        };
    }
}

public sealed class InstanceTests(InstanceServerFixture server) : IClassFixture<InstanceServerFixture>
{
    [Fact]
    public async Task ConfigReportsTheInstanceCount()
    {
        var (status, body) = await Json.Get(server.Http, "/v2/models/mnist_x4/config");
        Assert.Equal(200, status);
        Assert.Equal(4, body.GetProperty("instance_group")[0].GetProperty("count").GetInt32());
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var r = await client.ModelConfigAsync(new ModelConfigRequest { Name = "linear_x2" });
        Assert.Equal(2, r.Config.InstanceGroup.Single().Count);
        Assert.Equal(ModelInstanceGroup.Types.Kind.Cpu, r.Config.InstanceGroup.Single().Kind);
    }

    [Theory]
    [InlineData("""{ "instance_count": 0 }""", "must be in [1, 64]")]
    [InlineData("""{ "instance_count": 65 }""", "must be in [1, 64]")]
    [InlineData("""{ "instance_group": [ { "count": 2, "kind": "KIND_GPU" } ] }""", "KIND_GPU")]
    [InlineData("""{ "instance_group": [ { "count": 0 } ] }""", "at least 1")]
    [InlineData("""{ "instance_count": 2, "instance_group": [ { "count": 2 } ] }""", "not both")]
    [InlineData("""{ "instance_count": "two" }""", "integer")]
    public void BadInstanceSettingsAreRefused(string json, string message)
    {
        var e = Assert.Throws<ModelFormatException>(() => ModelConfig.Parse(json, "m"));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void InstanceGroupCountsAddUp()
    {
        Assert.Equal(1, ModelConfig.Parse("{}", "m").InstanceCount);
        Assert.Equal(5, ModelConfig.Parse("""{ "instance_group": [ { "count": 2 }, { "count": 3, "kind": "KIND_CPU" } ] }""", "m").InstanceCount);
        Assert.Equal(3, ModelConfig.Parse("""{ "instance_count": 3 }""", "m").InstanceCount);
    }

    static float[] Scaled(int i) => [.. Mnist.Input.Select(v => v * (1 + i * 0.25f) - i)];

    static async Task<float[]> Infer(HttpClient http, float[] data)
    {
        var (status, body) = await Json.Post(http, "/v2/models/mnist_x4/infer", Mnist.InferJson(data: data));
        Assert.True(status == 200, body.ToString());
        return Json.Floats(body.GetProperty("outputs")[0].GetProperty("data"));
    }

    [Fact]
    public async Task FourInstancesRunFourRequestsAtOnceWithSequentialResults()
    {
        var inputs = Enumerable.Range(0, 8).Select(Scaled).ToArray();
        var sequential = new List<float[]>();
        foreach (var x in inputs) sequential.Add(await Infer(server.Http, x));
        Assert.Equal(Mnist.Expected.Length, sequential[0].Length);
        Mnist.AssertClose(Mnist.Expected, sequential[0]);

        // Four at a time must meet inside the execution hook: only possible with four executions running at once.
        server.Arm(4);
        try
        {
            var parallel = await Task.WhenAll(inputs.Select(x => Infer(server.Http, x)));
            Assert.Equal(4, server.MaxInside);
            for (int i = 0; i < inputs.Length; i++) Assert.Equal(sequential[i], parallel[i]);
        }
        finally { server.Rendezvous = 0; }
    }

    [Fact]
    public async Task BatcherRunsTwoBatchesAtOnceWithTwoInstances()
    {
        server.Arm(2);
        try
        {
            var rows = Enumerable.Range(0, 6).Select(LinearModel.Row).ToArray();
            async Task<float[]> Send(float[] x)
            {
                var (status, body) = await Json.Post(server.Http, "/v2/models/linear_x2/infer", LinearModel.InferJson(x));
                Assert.True(status == 200, body.ToString());
                return Json.Floats(body.GetProperty("outputs")[0].GetProperty("data"));
            }
            // The first request's batch holds instance 1 inside the hook; the rest must form a batch on instance 2.
            var first = Send(rows[0]);
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (server.MaxInside < 1 && DateTime.UtcNow < deadline) await Task.Delay(5);
            var rest = rows.Skip(1).Select(Send).ToList();
            var results = await Task.WhenAll([first, .. rest]);
            Assert.Equal(2, server.MaxInside);
            for (int i = 0; i < rows.Length; i++) Mnist.AssertClose(LinearModel.Expected(rows[i]), results[i], 1e-5f);
        }
        finally { server.Rendezvous = 0; }
    }
}
