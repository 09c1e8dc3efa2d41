using System.Text.Json;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Nabla.Interop.Onnx;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>The vendored mnist-8 model and its test pair (tests/fixtures/serving/mnist-8).</summary>
public static class Mnist
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "fixtures", "serving", "mnist-8");
    public static string ModelPath => Path.Combine(Dir, "model.onnx");
    public static float[] Input => OnnxModel.ReadTensor(Path.Combine(Dir, "test_data_set_0", "input_0.pb")).ToArray<float>();
    public static float[] Expected => OnnxModel.ReadTensor(Path.Combine(Dir, "test_data_set_0", "output_0.pb")).ToArray<float>();

    public const string Config = """
        {
          "name": "mnist",
          "platform": "nabla_onnx",
          "max_batch_size": 0,
          "input": [ { "name": "Input3", "data_type": "TYPE_FP32", "dims": [ 1, 1, 28, 28 ] } ],
          "output": [ { "name": "Plus214_Output_0", "data_type": "TYPE_FP32", "dims": [ 1, 10 ] } ]
        }
        """;

    /// <summary>The infer request body with the test image; <paramref name="extra"/> adds top-level members.</summary>
    public static string InferJson(string? id = null, string extra = "", string datatype = "FP32", string shape = "[1,1,28,28]", float[]? data = null)
    {
        var values = string.Join(",", (data ?? Input).Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture)));
        var idPart = id is null ? "" : $"\"id\": {JsonSerializer.Serialize(id)},";
        return $$"""{ {{idPart}} "inputs": [ { "name": "Input3", "shape": {{shape}}, "datatype": "{{datatype}}", "data": [{{values}}] } ] {{extra}} }""";
    }

    public static void AssertClose(float[] expected, float[] actual, float tol = 1e-3f)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"element {i}: expected {expected[i]}, got {actual[i]}");
    }
}

/// <summary>A temporary model repository: good, versioned, broken and auto-configured copies of mnist-8.</summary>
public sealed class TempRepository : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "nabla-serving-" + Guid.NewGuid().ToString("N"));

    public TempRepository()
    {
        Model("mnist", Mnist.Config, 1);
        Model("mnist_reload", Mnist.Config.Replace("\"mnist\"", "\"mnist_reload\""), 1);
        // Version 1 good, version 2 a corrupt file: v2 is UNAVAILABLE with its reason, requests fall back to v1.
        Model("mnist_versions", Mnist.Config.Replace("\"mnist\"", "\"mnist_versions\"").Replace("\"max_batch_size\": 0,", "\"max_batch_size\": 0, \"version_policy\": { \"all\": {} },"), 1);
        Directory.CreateDirectory(Path.Combine(Root, "mnist_versions", "2"));
        File.WriteAllBytes(Path.Combine(Root, "mnist_versions", "2", "model.onnx"), [0x08, 0x07, 0xFF, 0xFF, 0x12, 0x99, 0x01]);
        // No config.json: inputs and outputs come from the ONNX graph.
        Model("mnist_auto", null, 3);
        // A config that declares an input the model does not have.
        Model("broken_config", Mnist.Config.Replace("\"mnist\"", "\"broken_config\"").Replace("Input3", "NoSuchInput"), 1);
        // A folder with no version folder and a non-numeric folder.
        Directory.CreateDirectory(Path.Combine(Root, "empty_model", "latest"));
        // Ignored: a hidden folder, a loose file, a folder name with a space.
        Directory.CreateDirectory(Path.Combine(Root, ".hidden", "1"));
        File.WriteAllText(Path.Combine(Root, "README.txt"), "not a model");
        Directory.CreateDirectory(Path.Combine(Root, "bad name", "1"));
    }

    void Model(string name, string? config, int version) => WriteModel(Root, name, File.ReadAllBytes(Mnist.ModelPath), config, version);

    /// <summary>Writes <c>root/name/version/model.onnx</c> and, when given, <c>root/name/config.json</c>.</summary>
    public static void WriteModel(string root, string name, byte[] onnx, string? config, int version = 1)
    {
        var dir = Path.Combine(root, name, version.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), onnx);
        if (config is not null) File.WriteAllText(Path.Combine(root, name, "config.json"), config);
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>An in-process server on real loopback sockets (ephemeral ports), with REST and gRPC clients.</summary>
public class ServerFixture : IAsyncLifetime
{
    public const long BodyLimit = 1 << 20;

    public TempRepository Repository { get; } = new();
    public WebApplication App { get; private set; } = null!;
    public ServingOptions Options { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public GrpcChannel Channel { get; private set; } = null!;
    public int HttpPort { get; private set; }
    public int GrpcPort { get; private set; }

    protected virtual void Configure(ServingOptions options) { }

    public async Task InitializeAsync()
    {
        Options = new ServingOptions { ModelRepository = Repository.Root, HttpPort = 0, GrpcPort = 0, MaxRequestBytes = BodyLimit, DrainTimeout = TimeSpan.FromSeconds(10) };
        Configure(Options);
        App = NablaServing.BuildServer(Options, LogLevel.Warning);
        await App.StartAsync();
        (HttpPort, GrpcPort) = NablaServing.BoundPorts(App);
        Http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{HttpPort}"), Timeout = TimeSpan.FromSeconds(60) };
        Channel = GrpcChannel.ForAddress($"http://127.0.0.1:{GrpcPort}");
        var state = App.Services.GetRequiredService<ServerState>();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!state.Loaded && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.True(state.Loaded, "models did not finish loading within 60 s");
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        Channel.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        Repository.Dispose();
    }
}

public static class Json
{
    public static async Task<(int status, JsonElement body)> Send(HttpClient http, HttpMethod method, string path, string? json = null)
    {
        using var req = new HttpRequestMessage(method, path);
        if (json is not null) req.Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json");
        using var resp = await http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        var body = text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
        return ((int)resp.StatusCode, body);
    }

    public static Task<(int, JsonElement)> Get(HttpClient http, string path) => Send(http, HttpMethod.Get, path);
    public static Task<(int, JsonElement)> Post(HttpClient http, string path, string? json = null) => Send(http, HttpMethod.Post, path, json ?? "");

    /// <summary>
    /// Posts a binary-extension request (<paramref name="body"/> = JSON header of <paramref name="headerLength"/> bytes,
    /// then the raw tensors), asserts success, and returns the reply's JSON header, the whole reply and its header length.
    /// </summary>
    public static async Task<(JsonElement json, byte[] bytes, int headerLength)> PostBinary(HttpClient http, string path, byte[] body, int headerLength)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(body) };
        req.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
        req.Content.Headers.Add(RestApi.HeaderLengthName, headerLength.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var resp = await http.SendAsync(req);
        var bytes = await resp.Content.ReadAsByteArrayAsync();
        Assert.True(resp.IsSuccessStatusCode, System.Text.Encoding.UTF8.GetString(bytes));
        int n = int.Parse(resp.Headers.GetValues(RestApi.HeaderLengthName).Single(), System.Globalization.CultureInfo.InvariantCulture);
        return (JsonDocument.Parse(bytes.AsMemory(0, n)).RootElement, bytes, n);
    }

    public static float[] Floats(JsonElement data) => [.. data.EnumerateArray().Select(e => e.GetSingle())];

    /// <summary>Asserts an error reply: the status and a non-empty {"error": "..."} body.</summary>
    public static string AssertError((int status, JsonElement body) r, int status)
    {
        Assert.True(r.status == status, $"expected HTTP {status}, got {r.status}: {r.body}");
        Assert.Equal(JsonValueKind.Object, r.body.ValueKind);
        var msg = r.body.GetProperty("error").GetString();
        Assert.False(string.IsNullOrEmpty(msg));
        return msg!;
    }
}
