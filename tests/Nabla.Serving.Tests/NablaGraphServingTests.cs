using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Nabla.Interop.Onnx;
using Nabla.NN;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>
/// The real <c>nabla serve</c> process over a repository whose version folders hold saved Nabla graphs
/// (model.nabla.json + model.safetensors) instead of ONNX files: auto-configured, versioned, batched, several instances.
/// </summary>
public sealed class NablaGraphServingTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "nabla-serving-graph-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>A small traced network saved as a graph with a dynamic batch: input "input" [batch, 4], output "output" [batch, 3].</summary>
    internal static void SaveTiny(string path, int seed)
    {
        Tensor.ManualSeed((ulong)seed);
        var net = new Sequential(new Linear(4, 8), new ReLU(), new Linear(8, 3));
        net.Eval();
        net.SaveGraph(path, [Tensor.Randn([2, 4], generator: new Generator((ulong)seed))]);
    }

    static string Floats(IEnumerable<float> xs) => string.Join(",", xs.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));

    [Fact]
    public async Task ServesSavedGraphsLikeOnnxModels()
    {
        // digits: mnist-8 converted to a saved graph; no config.json, so inputs and outputs come from the graph.
        var digits = Path.Combine(root, "digits", "1");
        Directory.CreateDirectory(digits);
        NablaGraphFiles.ConvertOnnx(Mnist.ModelPath, Path.Combine(digits, "model.nabla.json"));
        // tiny: two versions of a traced network under a configured file name, batched, two instances.
        foreach (var v in new[] { 1, 2 })
        {
            Directory.CreateDirectory(Path.Combine(root, "tiny", $"{v}"));
            SaveTiny(Path.Combine(root, "tiny", $"{v}", "tiny.nabla.json"), 10 + v);
        }
        File.WriteAllText(Path.Combine(root, "tiny", "config.json"), """
            {
              "name": "tiny",
              "max_batch_size": 8,
              "default_model_filename": "tiny.nabla.json",
              "version_policy": { "all": {} },
              "instance_count": 2,
              "dynamic_batching": { "max_queue_delay_microseconds": 2000 }
            }
            """);
        // broken: a saved graph whose weights file is missing is UNAVAILABLE with the reason, and nothing else suffers.
        var broken = Path.Combine(root, "broken", "1");
        Directory.CreateDirectory(broken);
        SaveTiny(Path.Combine(broken, "model.nabla.json"), 5);
        File.Delete(Path.Combine(broken, "model.safetensors"));

        // What the server should answer, computed in process from the same files.
        var image = OnnxModel.ReadTensor(Path.Combine(Mnist.Dir, "test_data_set_0", "input_0.pb"));
        var digitsExpected = NablaGraphFiles.Load(Path.Combine(digits, "model.nabla.json")).Run(image)[0].ToArray<float>();
        var batch = Tensor.Randn([3, 4], generator: new Generator(99));
        var tinyExpected = new[] { 1, 2 }.Select(v => NablaGraphFiles.Load(Path.Combine(root, "tiny", $"{v}", "tiny.nabla.json")).Run(batch)[0].ToArray<float>()).ToArray();
        Assert.NotEqual(tinyExpected[0], tinyExpected[1]);

        using var serve = await ServeProcess.StartAsync(root, ["--drain-timeout", "5"], TimeSpan.FromSeconds(90));
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{serve.RestPort}"), Timeout = TimeSpan.FromSeconds(60) };
            var deadline = DateTime.UtcNow.AddSeconds(90);
            int ready = 0;
            while (DateTime.UtcNow < deadline && (ready = (await Json.Get(http, "/v2/models/tiny/versions/2/ready")).Item1) != 200) await Task.Delay(50);
            Assert.Equal(200, ready);

            // digits: the auto-completed metadata names the graph's input; inference equals the in-process run.
            var (status, meta) = await Json.Get(http, "/v2/models/digits");
            Assert.True(status == 200, meta.ToString());
            Assert.Equal("Input3", meta.GetProperty("inputs")[0].GetProperty("name").GetString());
            (status, var body) = await Json.Post(http, "/v2/models/digits/infer", Mnist.InferJson());
            Assert.True(status == 200, body.ToString());
            var got = Json.Floats(body.GetProperty("outputs")[0].GetProperty("data"));
            Mnist.AssertClose(digitsExpected, got, 1e-5f);
            Mnist.AssertClose(Mnist.Expected, got);

            // tiny: each version answers with its own weights, for a batch of 3, several requests at once.
            for (int v = 1; v <= 2; v++)
            {
                var request = $$"""{ "inputs": [ { "name": "input", "shape": [3, 4], "datatype": "FP32", "data": [{{Floats(batch.ToArray<float>())}}] } ] }""";
                var replies = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Json.Post(http, $"/v2/models/tiny/versions/{v}/infer", request)));
                foreach (var (s, b) in replies)
                {
                    Assert.True(s == 200, b.ToString());
                    var output = b.GetProperty("outputs")[0];
                    Assert.Equal("output", output.GetProperty("name").GetString());
                    Assert.Equal(new long[] { 3, 3 }, output.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray());
                    Mnist.AssertClose(tinyExpected[v - 1], Json.Floats(output.GetProperty("data")), 1e-5f);
                }
            }
            (status, var config) = await Json.Get(http, "/v2/models/tiny/config");
            Assert.True(status == 200, config.ToString());
            Assert.Equal("tiny.nabla.json", config.GetProperty("default_model_filename").GetString());

            // broken: UNAVAILABLE, with the loader's reason in the index.
            Assert.NotEqual(200, (await Json.Get(http, "/v2/models/broken/ready")).Item1);
            (status, var index) = await Json.Post(http, "/v2/repository/index");
            Assert.Equal(200, status);
            var entry = index.EnumerateArray().First(e => e.GetProperty("name").GetString() == "broken");
            Assert.Equal("UNAVAILABLE", entry.GetProperty("state").GetString());
            Assert.Contains("model.safetensors", entry.GetProperty("reason").GetString());
        }
        catch
        {
            Console.Error.WriteLine(serve.Output);
            throw;
        }
        finally
        {
            if (!serve.Process.HasExited)
            {
                await serve.TerminateAsync();
                serve.Process.WaitForExit(15_000);
            }
        }
    }
}

/// <summary>Polling over saved graphs: a version folder is complete only once both of its files are there.</summary>
public sealed class NablaGraphPollFixture : ServerFixture
{
    public string Staging { get; } = Path.Combine(Path.GetTempPath(), "nabla-graph-staging-" + Guid.NewGuid().ToString("N"));

    protected override void Configure(ServingOptions options)
    {
        options.ModelControlMode = ModelControlMode.Poll;
        options.RepositoryPollInterval = TimeSpan.FromMilliseconds(150);
        var dir = Path.Combine(Repository.Root, "graph_poll", "1");
        Directory.CreateDirectory(dir);
        NablaGraphServingTests.SaveTiny(Path.Combine(dir, "model.nabla.json"), 11);
        Directory.CreateDirectory(Staging);
        NablaGraphServingTests.SaveTiny(Path.Combine(Staging, "model.nabla.json"), 12);
    }
}

public sealed class NablaGraphPollingTests(NablaGraphPollFixture f) : IClassFixture<NablaGraphPollFixture>
{
    [Fact]
    public async Task NewGraphVersionLoadsOnceItsWeightsArrive()
    {
        var x = Tensor.Randn([2, 4], generator: new Generator(5));
        var request = $$"""{ "inputs": [ { "name": "input", "shape": [2, 4], "datatype": "FP32", "data": [{{string.Join(",", x.ToArray<float>().Select(v => v.ToString("R", CultureInfo.InvariantCulture)))}}] } ] }""";
        async Task<float[]> Infer()
        {
            var (status, body) = await Json.Post(f.Http, "/v2/models/graph_poll/infer", request);
            Assert.True(status == 200, body.ToString());
            return Json.Floats(body.GetProperty("outputs")[0].GetProperty("data"));
        }
        var v1 = NablaGraphFiles.Load(Path.Combine(f.Repository.Root, "graph_poll", "1", "model.nabla.json")).Run(x)[0].ToArray<float>();
        var v2 = NablaGraphFiles.Load(Path.Combine(f.Staging, "model.nabla.json")).Run(x)[0].ToArray<float>();
        Assert.NotEqual(v1, v2);
        Mnist.AssertClose(v1, await Infer(), 1e-5f);

        // Version 2 arrives without its weights: not complete, version 1 keeps serving.
        var dir = Path.Combine(f.Repository.Root, "graph_poll", "2");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(f.Staging, "model.nabla.json"), Path.Combine(dir, "model.nabla.json"));
        File.WriteAllText(Path.Combine(dir, ModelRepository.ReadyMarker), "");
        await Task.Delay(600);   // four poll periods
        Assert.NotEqual(200, (await Json.Get(f.Http, "/v2/models/graph_poll/versions/2/ready")).Item1);
        Mnist.AssertClose(v1, await Infer(), 1e-5f);

        // The weights arrive: version 2 loads, warms up and takes the traffic.
        File.Copy(Path.Combine(f.Staging, "model.safetensors"), Path.Combine(dir, "model.safetensors"));
        var sw = Stopwatch.StartNew();
        while ((await Json.Get(f.Http, "/v2/models/graph_poll/versions/2/ready")).Item1 != 200)
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), "version 2 did not become ready");
            await Task.Delay(50);
        }
        Mnist.AssertClose(v2, await Infer(), 1e-5f);
        try { Directory.Delete(f.Staging, recursive: true); } catch (IOException) { }
    }
}

