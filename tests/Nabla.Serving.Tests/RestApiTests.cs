using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>Health, metadata, inference, configuration, statistics and the index over REST against a real listening server.</summary>
public sealed class RestApiTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    HttpClient Http => server.Http;

    [Fact]
    public async Task HealthLiveAndReady()
    {
        var (s1, live) = await Json.Get(Http, "/v2/health/live");
        Assert.Equal(200, s1);
        Assert.True(live.GetProperty("live").GetBoolean());
        var (s2, ready) = await Json.Get(Http, "/v2/health/ready");
        Assert.Equal(200, s2);
        Assert.True(ready.GetProperty("ready").GetBoolean());
    }

    [Theory]
    [InlineData("/v2")]
    [InlineData("/v2/")]
    public async Task ServerMetadataListsExtensions(string path)
    {
        var (status, body) = await Json.Get(Http, path);
        Assert.Equal(200, status);
        Assert.Equal("nabla", body.GetProperty("name").GetString());
        Assert.False(string.IsNullOrEmpty(body.GetProperty("version").GetString()));
        var ext = body.GetProperty("extensions").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("model_repository", ext);
        Assert.Contains("binary_tensor_data", ext);
    }

    [Fact]
    public async Task ModelMetadataFromConfig()
    {
        var (status, body) = await Json.Get(Http, "/v2/models/mnist");
        Assert.Equal(200, status);
        Assert.Equal("mnist", body.GetProperty("name").GetString());
        Assert.Equal("nabla_onnx", body.GetProperty("platform").GetString());
        Assert.Equal(["1"], body.GetProperty("versions").EnumerateArray().Select(e => e.GetString()!));
        var input = body.GetProperty("inputs")[0];
        Assert.Equal("Input3", input.GetProperty("name").GetString());
        Assert.Equal("FP32", input.GetProperty("datatype").GetString());
        Assert.Equal([1L, 1, 28, 28], input.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        var output = body.GetProperty("outputs")[0];
        Assert.Equal("Plus214_Output_0", output.GetProperty("name").GetString());
        Assert.Equal([1L, 10], output.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        var (s2, v1) = await Json.Get(Http, "/v2/models/mnist/versions/1");
        Assert.Equal(200, s2);
        Assert.Equal("Input3", v1.GetProperty("inputs")[0].GetProperty("name").GetString());
    }

    [Fact]
    public async Task ModelMetadataWithoutConfigComesFromTheGraph()
    {
        var (status, body) = await Json.Get(Http, "/v2/models/mnist_auto");
        Assert.Equal(200, status);
        Assert.Equal(["3"], body.GetProperty("versions").EnumerateArray().Select(e => e.GetString()!));
        Assert.Equal("Input3", body.GetProperty("inputs")[0].GetProperty("name").GetString());
        Assert.Equal([1L, 1, 28, 28], body.GetProperty("inputs")[0].GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        var (s, infer) = await Json.Post(Http, "/v2/models/mnist_auto/infer", Mnist.InferJson());
        Assert.Equal(200, s);
        Assert.Equal("3", infer.GetProperty("model_version").GetString());
        Mnist.AssertClose(Mnist.Expected, Json.Floats(infer.GetProperty("outputs")[0].GetProperty("data")));
    }

    [Fact]
    public async Task ModelReady()
    {
        var (s1, b1) = await Json.Get(Http, "/v2/models/mnist/ready");
        Assert.Equal(200, s1);
        Assert.True(b1.GetProperty("ready").GetBoolean());
        Assert.Equal("mnist", b1.GetProperty("name").GetString());
        var (s2, _) = await Json.Get(Http, "/v2/models/mnist/versions/1/ready");
        Assert.Equal(200, s2);
        var r3 = await Json.Get(Http, "/v2/models/mnist_versions/versions/2/ready");
        Json.AssertError(r3, 503);
        Assert.False(r3.Item2.GetProperty("ready").GetBoolean());
        Json.AssertError(await Json.Get(Http, "/v2/models/nope/ready"), 404);
    }

    [Fact]
    public async Task InferMatchesTheReferenceOutputAndEchoesId()
    {
        var (status, body) = await Json.Post(Http, "/v2/models/mnist/infer", Mnist.InferJson(id: "req-42"));
        Assert.Equal(200, status);
        Assert.Equal("mnist", body.GetProperty("model_name").GetString());
        Assert.Equal("1", body.GetProperty("model_version").GetString());
        Assert.Equal("req-42", body.GetProperty("id").GetString());
        var output = body.GetProperty("outputs")[0];
        Assert.Equal("Plus214_Output_0", output.GetProperty("name").GetString());
        Assert.Equal("FP32", output.GetProperty("datatype").GetString());
        Assert.Equal([1L, 10], output.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        Mnist.AssertClose(Mnist.Expected, Json.Floats(output.GetProperty("data")));
    }

    [Fact]
    public async Task InferAcceptsNestedData()
    {
        var x = Mnist.Input;
        var sb = new StringBuilder("[[[");
        for (int r = 0; r < 28; r++)
        {
            if (r > 0) sb.Append(',');
            sb.Append('[').Append(string.Join(",", x.Skip(r * 28).Take(28).Select(v => v.ToString("R", CultureInfo.InvariantCulture)))).Append(']');
        }
        sb.Append("]]]");
        var json = $$"""{"inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32","data":{{sb}}}]}""";
        var (status, body) = await Json.Post(Http, "/v2/models/mnist/versions/1/infer", json);
        Assert.Equal(200, status);
        Assert.False(body.TryGetProperty("id", out _));
        Mnist.AssertClose(Mnist.Expected, Json.Floats(body.GetProperty("outputs")[0].GetProperty("data")));
    }

    [Fact]
    public async Task RequestedOutputsAreHonoured()
    {
        var ok = await Json.Post(Http, "/v2/models/mnist/infer", Mnist.InferJson(extra: """, "outputs": [ { "name": "Plus214_Output_0" } ]"""));
        Assert.Equal(200, ok.Item1);
        Assert.Equal(1, ok.Item2.GetProperty("outputs").GetArrayLength());
        var bad = await Json.Post(Http, "/v2/models/mnist/infer", Mnist.InferJson(extra: """, "outputs": [ { "name": "nope" } ]"""));
        Assert.Contains("unknown output 'nope'", Json.AssertError(bad, 400));
    }

    [Fact]
    public async Task VersionedModelFallsBackToTheReadyVersion()
    {
        var (status, body) = await Json.Post(Http, "/v2/models/mnist_versions/infer", Mnist.InferJson());
        Assert.Equal(200, status);
        Assert.Equal("1", body.GetProperty("model_version").GetString());
        var r = await Json.Post(Http, "/v2/models/mnist_versions/versions/2/infer", Mnist.InferJson());
        Assert.Contains("not ready", Json.AssertError(r, 503));
    }

    [Fact]
    public async Task BinaryTensorExtensionRoundTrip()
    {
        var input = Mnist.Input;
        var raw = MemoryMarshal.AsBytes(input.AsSpan()).ToArray();
        var header = Encoding.UTF8.GetBytes($$$"""{"id":"bin","inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32","parameters":{"binary_data_size":{{{raw.Length}}}}}],"outputs":[{"name":"Plus214_Output_0","parameters":{"binary_data":true}}]}""");
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/mnist/infer") { Content = new ByteArrayContent([.. header, .. raw]) };
        req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        req.Content.Headers.Add(RestApi.HeaderLengthName, header.Length.ToString(CultureInfo.InvariantCulture));
        using var resp = await Http.SendAsync(req);
        Assert.Equal(200, (int)resp.StatusCode);
        var bytes = await resp.Content.ReadAsByteArrayAsync();
        int n = int.Parse(resp.Headers.GetValues(RestApi.HeaderLengthName).Single(), CultureInfo.InvariantCulture);
        var json = JsonDocument.Parse(bytes.AsMemory(0, n)).RootElement;
        Assert.Equal("bin", json.GetProperty("id").GetString());
        var output = json.GetProperty("outputs")[0];
        Assert.Equal(40, output.GetProperty("parameters").GetProperty("binary_data_size").GetInt32());
        Assert.False(output.TryGetProperty("data", out _));
        Assert.Equal(n + 40, bytes.Length);
        Mnist.AssertClose(Mnist.Expected, MemoryMarshal.Cast<byte, float>(bytes.AsSpan(n)).ToArray());
    }

    [Fact]
    public async Task RawBinaryRequestWithZeroHeaderLength()
    {
        var raw = MemoryMarshal.AsBytes(Mnist.Input.AsSpan()).ToArray();
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/mnist/infer") { Content = new ByteArrayContent(raw) };
        req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        req.Content.Headers.Add(RestApi.HeaderLengthName, "0");
        using var resp = await Http.SendAsync(req);
        Assert.Equal(200, (int)resp.StatusCode);
        var bytes = await resp.Content.ReadAsByteArrayAsync();
        int n = int.Parse(resp.Headers.GetValues(RestApi.HeaderLengthName).Single(), CultureInfo.InvariantCulture);
        Mnist.AssertClose(Mnist.Expected, MemoryMarshal.Cast<byte, float>(bytes.AsSpan(n)).ToArray());
    }

    [Fact]
    public async Task ConfigAndStats()
    {
        var (s1, config) = await Json.Get(Http, "/v2/models/mnist/config");
        Assert.Equal(200, s1);
        Assert.Equal("mnist", config.GetProperty("name").GetString());
        Assert.Equal(0, config.GetProperty("max_batch_size").GetInt32());
        Assert.Equal("TYPE_FP32", config.GetProperty("input")[0].GetProperty("data_type").GetString());
        Assert.Equal(1, config.GetProperty("version_policy").GetProperty("latest").GetProperty("num_versions").GetInt32());

        var before = await Json.Get(Http, "/v2/models/mnist/stats");
        long count0 = before.Item2.GetProperty("model_stats")[0].GetProperty("inference_stats").GetProperty("success").GetProperty("count").GetInt64();
        Assert.Equal(200, (await Json.Post(Http, "/v2/models/mnist/infer", Mnist.InferJson())).Item1);
        var (s2, stats) = await Json.Get(Http, "/v2/models/mnist/versions/1/stats");
        Assert.Equal(200, s2);
        var st = stats.GetProperty("model_stats")[0];
        Assert.Equal("mnist", st.GetProperty("name").GetString());
        Assert.Equal("1", st.GetProperty("version").GetString());
        Assert.True(st.GetProperty("inference_stats").GetProperty("success").GetProperty("count").GetInt64() >= count0 + 1);
        Assert.True(st.GetProperty("inference_stats").GetProperty("compute_infer").GetProperty("ns").GetInt64() > 0);
        Assert.True(st.GetProperty("last_inference").GetInt64() > 0);
        var (s3, all) = await Json.Get(Http, "/v2/models/stats");
        Assert.Equal(200, s3);
        Assert.True(all.GetProperty("model_stats").GetArrayLength() >= 4);
    }

    [Fact]
    public async Task RepositoryIndexReportsBrokenModelsWithReasons()
    {
        var (status, index) = await Json.Post(Http, "/v2/repository/index", "{}");
        Assert.Equal(200, status);
        var rows = index.EnumerateArray().Select(r => (
            name: r.GetProperty("name").GetString()!,
            version: r.TryGetProperty("version", out var v) ? v.GetString() : null,
            state: r.GetProperty("state").GetString()!,
            reason: r.GetProperty("reason").GetString()!)).ToList();
        Assert.Contains(rows, r => r is { name: "mnist", version: "1", state: "READY" });
        Assert.Contains(rows, r => r is { name: "mnist_versions", version: "1", state: "READY" });
        var v2 = Assert.Single(rows, r => r is { name: "mnist_versions", version: "2" });
        Assert.Equal("UNAVAILABLE", v2.state);
        Assert.Contains("model.onnx", v2.reason);
        var cfg = Assert.Single(rows, r => r.name == "broken_config");
        Assert.Equal("UNAVAILABLE", cfg.state);
        Assert.Contains("NoSuchInput", cfg.reason);
        var empty = Assert.Single(rows, r => r.name == "empty_model");
        Assert.Equal("UNAVAILABLE", empty.state);
        Assert.Contains("no version", empty.reason);
        Assert.DoesNotContain(rows, r => r.name is ".hidden" or "bad name" or "README.txt");

        var (s2, readyOnly) = await Json.Post(Http, "/v2/repository/index", """{"ready": true}""");
        Assert.Equal(200, s2);
        Assert.All(readyOnly.EnumerateArray(), r => Assert.Equal("READY", r.GetProperty("state").GetString()));
        Assert.Equal(200, (await Json.Post(Http, "/v2/repository/index")).Item1);
    }

    [Fact]
    public async Task CurlInfer()
    {
        const string curl = "/usr/bin/curl";
        // NOTE: .ci/run installs curl when it is missing; a client we did not write is part of what this suite checks.
        Assert.True(File.Exists(curl), $"{curl} is required (apt-get install curl)");
        var file = Path.Combine(server.Repository.Root, "curl-request.json");
        await File.WriteAllTextAsync(file, Mnist.InferJson(id: "from-curl"));
        var psi = new ProcessStartInfo(curl, ["-sS", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + file,
            "-w", "\n%{http_code}", $"http://127.0.0.1:{server.HttpPort}/v2/models/mnist/infer"]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.Equal(0, p.ExitCode);
        var lines = output.TrimEnd().Split('\n');
        Assert.Equal("200", lines[^1]);
        var body = JsonDocument.Parse(string.Join("\n", lines[..^1])).RootElement;
        Assert.Equal("from-curl", body.GetProperty("id").GetString());
        Mnist.AssertClose(Mnist.Expected, Json.Floats(body.GetProperty("outputs")[0].GetProperty("data")));
    }
}
