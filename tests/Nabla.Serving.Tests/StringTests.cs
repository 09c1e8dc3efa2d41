using System.Buffers.Binary;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Nabla.Interop.Onnx;
using Nabla.Serving.Grpc;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>tests/fixtures/serving/strings/model.onnx (written by tools/fixtures/make_string_model.py with the onnx package).</summary>
public static class StringModel
{
    public static string Path => System.IO.Path.Combine(AppContext.BaseDirectory, "fixtures", "serving", "strings", "model.onnx");

    public static readonly string[] Outputs = ["label", "echo", "value", "formatted", "pair", "tagged"];

    /// <summary>ONNX Runtime's outputs for the same inputs: each as (shape, elements as strings, longs or floats).</summary>
    public static Dictionary<string, (long[] Shape, object[] Values)> OnnxRuntime(string[] text, string[] numbers)
    {
        using var session = new InferenceSession(Path);
        using var results = session.Run([
            NamedOnnxValue.CreateFromTensor("text", new DenseTensor<string>(text, [text.Length])),
            NamedOnnxValue.CreateFromTensor("numbers", new DenseTensor<string>(numbers, [numbers.Length])),
        ]);
        var r = new Dictionary<string, (long[], object[])>();
        foreach (var v in results)
        {
            var meta = session.OutputMetadata[v.Name];
            if (meta.ElementType == typeof(string)) { var t = v.AsTensor<string>(); r[v.Name] = ([.. t.Dimensions.ToArray().Select(d => (long)d)], [.. t]); }
            else if (meta.ElementType == typeof(long)) { var t = v.AsTensor<long>(); r[v.Name] = ([.. t.Dimensions.ToArray().Select(d => (long)d)], [.. t.Select(x => (object)x)]); }
            else { var t = v.AsTensor<float>(); r[v.Name] = ([.. t.Dimensions.ToArray().Select(d => (long)d)], [.. t.Select(x => (object)x)]); }
        }
        return r;
    }

    public static byte[] LengthPrefixed(IEnumerable<byte[]> elements)
    {
        var ms = new MemoryStream();
        var len = new byte[4];
        foreach (var e in elements)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)e.Length);
            ms.Write(len);
            ms.Write(e);
        }
        return ms.ToArray();
    }

    public static List<byte[]> ParseLengthPrefixed(ReadOnlySpan<byte> raw)
    {
        var r = new List<byte[]>();
        while (raw.Length > 0)
        {
            int n = (int)BinaryPrimitives.ReadUInt32LittleEndian(raw);
            r.Add(raw.Slice(4, n).ToArray());
            raw = raw[(4 + n)..];
        }
        return r;
    }
}

public sealed class StringServerFixture : ServerFixture
{
    protected override void Configure(ServingOptions options)
    {
        options.MaxRequestBytes = 4 << 20;   // room for a request of 100,000 strings
        void Put(string name, string? config)
        {
            var dir = Path.Combine(options.ModelRepository, name, "1");
            Directory.CreateDirectory(dir);
            File.Copy(StringModel.Path, Path.Combine(dir, "model.onnx"));
            if (config is not null) File.WriteAllText(Path.Combine(options.ModelRepository, name, "config.json"), config);
        }
        // No config: BYTES inputs and outputs come from the ONNX graph's STRING types.
        Put("strings", null);
        // Inputs and outputs from the graph too; dims after the batch dim are [] (one string per row).
        Put("strings_batched", """
            { "max_batch_size": 8, "instance_count": 2,
              "dynamic_batching": { "max_queue_delay_microseconds": 20000, "preferred_batch_size": [ 4 ] } }
            """);
    }
}

/// <summary>BYTES tensors end to end: JSON strings, the binary extension's length-prefixed elements, gRPC bytes_contents and raw contents.</summary>
public sealed class StringTests(StringServerFixture server) : IClassFixture<StringServerFixture>
{
    static readonly string[] Text = ["cat", "zebra", "bird", "dög", ""];
    static readonly string[] Numbers = ["1.5", "-2", "1e3", "0.1", "INF"];

    static string StringArray(IEnumerable<string> s) => JsonSerializer.Serialize(s);

    static void AssertMatches(Dictionary<string, (long[] Shape, object[] Values)> expected, string name, long[] shape, object[] values)
    {
        var (eShape, eValues) = expected[name];
        Assert.Equal(eShape, shape);
        Assert.Equal(eValues.Length, values.Length);
        for (int i = 0; i < values.Length; i++)
            Assert.True(Equals(eValues[i], values[i]), $"{name}[{i}]: ONNX Runtime gives {eValues[i]}, the server {values[i]}");
    }

    [Fact]
    public async Task MetadataDeclaresBytesFromTheGraph()
    {
        var (status, body) = await Json.Get(server.Http, "/v2/models/strings");
        Assert.Equal(200, status);
        Assert.All(body.GetProperty("inputs").EnumerateArray(), i => Assert.Equal("BYTES", i.GetProperty("datatype").GetString()));
        var outs = body.GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!, o => o.GetProperty("datatype").GetString());
        Assert.Equal("INT64", outs["label"]);
        Assert.Equal("BYTES", outs["echo"]);
        Assert.Equal("FP32", outs["value"]);
        var (_, config) = await Json.Get(server.Http, "/v2/models/strings/config");
        Assert.Equal("TYPE_STRING", config.GetProperty("input")[0].GetProperty("data_type").GetString());
    }

    [Fact]
    public async Task JsonRequestMatchesOnnxRuntime()
    {
        var json = $$"""{"id":"s1","inputs":[{"name":"text","shape":[5],"datatype":"BYTES","data":{{StringArray(Text)}}},{"name":"numbers","shape":[5],"datatype":"BYTES","data":{{StringArray(Numbers)}}}]}""";
        var (status, body) = await Json.Post(server.Http, "/v2/models/strings/infer", json);
        Assert.True(status == 200, body.ToString());
        Assert.Equal("s1", body.GetProperty("id").GetString());
        var expected = StringModel.OnnxRuntime(Text, Numbers);
        var seen = new HashSet<string>();
        foreach (var o in body.GetProperty("outputs").EnumerateArray())
        {
            var name = o.GetProperty("name").GetString()!;
            seen.Add(name);
            var shape = o.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var dt = o.GetProperty("datatype").GetString();
            object[] values = [.. o.GetProperty("data").EnumerateArray().Select(e => dt switch
            {
                "BYTES" => (object)e.GetString()!,
                "INT64" => e.GetInt64(),
                _ => e.ValueKind == JsonValueKind.String ? e.GetString() == "Infinity" ? float.PositiveInfinity : float.NaN : e.GetSingle(),
            })];
            AssertMatches(expected, name, shape, values);
        }
        Assert.Equal(StringModel.Outputs.ToHashSet(), seen);
        // The values themselves, so a shared mistake of both implementations would still show.
        var label = body.GetProperty("outputs").EnumerateArray().First(o => o.GetProperty("name").GetString() == "label");
        Assert.Equal([0L, -1, 2, -1, -1], label.GetProperty("data").EnumerateArray().Select(e => e.GetInt64()));
    }

    [Fact]
    public async Task BinaryExtensionCarriesArbitraryBytes()
    {
        // Not UTF-8 (0xFF), an embedded NUL and an empty element: BYTES are bytes, not text.
        byte[][] text = [[0xFF, 0x00, 0x41], Encoding.UTF8.GetBytes("dog"), []];
        var textRaw = StringModel.LengthPrefixed(text);
        var numRaw = StringModel.LengthPrefixed(new[] { "4", "-0.5", "7" }.Select(Encoding.UTF8.GetBytes));
        var header = Encoding.UTF8.GetBytes($$$"""
            {"inputs":[{"name":"text","shape":[3],"datatype":"BYTES","parameters":{"binary_data_size":{{{textRaw.Length}}}}},
                       {"name":"numbers","shape":[3],"datatype":"BYTES","parameters":{"binary_data_size":{{{numRaw.Length}}}}}],
             "outputs":[{"name":"echo","parameters":{"binary_data":true}},{"name":"label"},{"name":"formatted","parameters":{"binary_data":true}}]}
            """);
        var (json, bytes, n) = await Json.PostBinary(server.Http, "/v2/models/strings/infer", (byte[])[.. header, .. textRaw, .. numRaw], header.Length);
        var outs = json.GetProperty("outputs").EnumerateArray().ToList();
        Assert.Equal(["echo", "label", "formatted"], outs.Select(o => o.GetProperty("name").GetString()));
        int echoSize = outs[0].GetProperty("parameters").GetProperty("binary_data_size").GetInt32();
        Assert.Equal(textRaw, bytes.AsSpan(n, echoSize).ToArray());
        Assert.Equal([-1L, 1, -1], outs[1].GetProperty("data").EnumerateArray().Select(e => e.GetInt64()));
        int fmtSize = outs[2].GetProperty("parameters").GetProperty("binary_data_size").GetInt32();
        var formatted = StringModel.ParseLengthPrefixed(bytes.AsSpan(n + echoSize, fmtSize)).Select(b => Encoding.UTF8.GetString(b)).ToArray();
        var expected = StringModel.OnnxRuntime(["a", "dog", ""], ["4", "-0.5", "7"]);
        AssertMatches(expected, "formatted", [3], formatted);
        Assert.Equal(n + echoSize + fmtSize, bytes.Length);
    }

    /// <summary>BYTES tensors of 100,000 elements, whose carriers are large enough to be recycled: two requests in a row
    /// (the second may reuse the first's memory) each get their own echo and labels back.</summary>
    [Fact]
    public async Task LargeBytesTensorsRoundTripRequestAfterRequest()
    {
        const int count = 100_000;
        for (int round = 0; round < 2; round++)
        {
            var text = Enumerable.Range(0, count).Select(i => Text[(i + round) % Text.Length] + (i % 7 == 0 ? i.ToString(CultureInfo.InvariantCulture) : "")).ToArray();
            var numbers = Enumerable.Range(0, count).Select(i => (i * 0.5 - round).ToString(CultureInfo.InvariantCulture)).ToArray();
            var textRaw = StringModel.LengthPrefixed(text.Select(Encoding.UTF8.GetBytes));
            var numRaw = StringModel.LengthPrefixed(numbers.Select(Encoding.UTF8.GetBytes));
            var header = Encoding.UTF8.GetBytes($$$"""
                {"inputs":[{"name":"text","shape":[{{{count}}}],"datatype":"BYTES","parameters":{"binary_data_size":{{{textRaw.Length}}}}},
                           {"name":"numbers","shape":[{{{count}}}],"datatype":"BYTES","parameters":{"binary_data_size":{{{numRaw.Length}}}}}],
                 "outputs":[{"name":"echo","parameters":{"binary_data":true}},{"name":"label","parameters":{"binary_data":true}}]}
                """);
            var (json, bytes, n) = await Json.PostBinary(server.Http, "/v2/models/strings/infer", (byte[])[.. header, .. textRaw, .. numRaw], header.Length);
            var outs = json.GetProperty("outputs").EnumerateArray().ToList();
            int echoSize = outs[0].GetProperty("parameters").GetProperty("binary_data_size").GetInt32();
            Assert.Equal(textRaw, bytes.AsSpan(n, echoSize).ToArray());
            var labels = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(bytes.AsSpan(n + echoSize)).ToArray();
            var expected = StringModel.OnnxRuntime(text, numbers)["label"].Values.Select(v => (long)v).ToArray();
            Assert.Equal(expected, labels);
        }
    }

    [Fact]
    public async Task NonUtf8OutputInJsonIs400()
    {
        var textRaw = StringModel.LengthPrefixed([[0xC3, 0x28]]);
        var numRaw = StringModel.LengthPrefixed([Encoding.UTF8.GetBytes("1")]);
        var header = Encoding.UTF8.GetBytes($$$"""
            {"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":{{{textRaw.Length}}}}},
                       {"name":"numbers","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":{{{numRaw.Length}}}}}],
             "outputs":[{"name":"echo"}]}
            """);
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/strings/infer") { Content = new ByteArrayContent((byte[])[.. header, .. textRaw, .. numRaw]) };
        req.Content.Headers.Add(RestApi.HeaderLengthName, header.Length.ToString(CultureInfo.InvariantCulture));
        using var resp = await server.Http.SendAsync(req);
        Assert.Equal(400, (int)resp.StatusCode);
        Assert.Contains("binary_data", await resp.Content.ReadAsStringAsync());
    }

    [Theory]
    [InlineData("""{"name":"text","shape":[2],"datatype":"BYTES","data":["a",3]}""", "is not a string")]
    [InlineData("""{"name":"text","shape":[3],"datatype":"BYTES","data":["a","b"]}""", "2 data elements")]
    [InlineData("""{"name":"text","shape":[2],"datatype":"FP32","data":[1,2]}""", "does not match the model's BYTES")]
    public async Task BadJsonBytesAre400(string textInput, string message)
    {
        var json = $$"""{"inputs":[{{textInput}},{"name":"numbers","shape":[2],"datatype":"BYTES","data":["1","2"]}]}""";
        Assert.Contains(message, Json.AssertError(await Json.Post(server.Http, "/v2/models/strings/infer", json), 400));
    }

    [Fact]
    public async Task NumberThatDoesNotParseIs400NamingTheNode()
    {
        var json = """{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["a"]},{"name":"numbers","shape":[1],"datatype":"BYTES","data":["hello"]}]}""";
        var msg = Json.AssertError(await Json.Post(server.Http, "/v2/models/strings/infer", json), 400);
        Assert.Contains("('hello') is not a number", msg);
        Assert.Contains("Cast", msg);
    }

    public static TheoryData<byte[], string> BadRaw => new()
    {
        { [9, 0, 0, 0, 0x61, 0, 0, 0, 0], "claims 9 bytes" },                       // length past the end
        { [1, 0, 0, 0, 0x61, 1, 0, 0, 0, 0x62, 0x63], "left over" },                // a third element for shape [2]
        { [1, 0, 0, 0, 0x61, 0xFF, 0xFF, 0xFF], "ends inside the length" },         // a truncated second length
        { [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0], "claims 4294967295 bytes" },        // a huge claimed length
        { [0, 0, 0], "cannot hold" },                                               // too short for two lengths
    };

    [Theory]
    [MemberData(nameof(BadRaw))]
    public async Task BadLengthPrefixesAre400(byte[] textRaw, string message)
    {
        var numRaw = StringModel.LengthPrefixed(new[] { "1", "2" }.Select(Encoding.UTF8.GetBytes));
        var header = Encoding.UTF8.GetBytes($$$"""
            {"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":{{{textRaw.Length}}}}},
                       {"name":"numbers","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":{{{numRaw.Length}}}}}]}
            """);
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/strings/infer") { Content = new ByteArrayContent((byte[])[.. header, .. textRaw, .. numRaw]) };
        req.Content.Headers.Add(RestApi.HeaderLengthName, header.Length.ToString(CultureInfo.InvariantCulture));
        using var resp = await server.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.True((int)resp.StatusCode == 400, text);
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error").GetString()!;
        Assert.Contains(message, error);
        Assert.Contains("input 'text'", error);
    }

    [Fact]
    public async Task TwoThousandMutatedBytesBodiesGetNo5xx()
    {
        // Random lengths, truncations and bit flips in the length-prefixed data and its header: 400 (or 200 when the
        // mutation happens to stay valid), never a 5xx, and a valid request succeeds right after.
        var rng = new Random(7);
        var good = StringModel.LengthPrefixed(Text.Select(Encoding.UTF8.GetBytes));
        var nums = StringModel.LengthPrefixed(Numbers.Select(Encoding.UTF8.GetBytes));
        var counts = new Dictionary<int, int>();
        for (int i = 0; i < 2000; i++)
        {
            var text = (byte[])good.Clone();
            switch (rng.Next(4))
            {
                case 0: text[rng.Next(text.Length)] ^= (byte)(1 << rng.Next(8)); break;
                case 1: text = text[..rng.Next(text.Length)]; break;
                case 2: BinaryPrimitives.WriteUInt32LittleEndian(text.AsSpan(0), (uint)rng.Next()); break;
                default: text = [.. text, .. Enumerable.Range(0, rng.Next(1, 9)).Select(_ => (byte)rng.Next(256))]; break;
            }
            long shape = rng.Next(6) == 0 ? rng.NextInt64(-2, 1L << 40) : 5;
            var header = Encoding.UTF8.GetBytes($$$"""
                {"inputs":[{"name":"text","shape":[{{{shape}}}],"datatype":"BYTES","parameters":{"binary_data_size":{{{text.Length}}}}},
                           {"name":"numbers","shape":[5],"datatype":"BYTES","parameters":{"binary_data_size":{{{nums.Length}}}}}]}
                """);
            using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/strings/infer") { Content = new ByteArrayContent((byte[])[.. header, .. text, .. nums]) };
            req.Content.Headers.Add(RestApi.HeaderLengthName, header.Length.ToString(CultureInfo.InvariantCulture));
            using var resp = await server.Http.SendAsync(req);
            int code = (int)resp.StatusCode;
            counts[code] = counts.GetValueOrDefault(code) + 1;
            Assert.True(code is 200 or 400, $"mutation {i} answered {code}: {await resp.Content.ReadAsStringAsync()}");
        }
        Assert.True(counts.GetValueOrDefault(400) > 1000, string.Join(", ", counts.Select(kv => $"{kv.Key}: {kv.Value}")));
        var json = $$"""{"inputs":[{"name":"text","shape":[5],"datatype":"BYTES","data":{{StringArray(Text)}}},{"name":"numbers","shape":[5],"datatype":"BYTES","data":{{StringArray(Numbers)}}}]}""";
        Assert.Equal(200, (await Json.Post(server.Http, "/v2/models/strings/infer", json)).Item1);
    }

    [Fact]
    public async Task ForeignClientsSendBytes()
    {
        // curl with JSON strings.
        const string curl = "/usr/bin/curl";
        Assert.True(File.Exists(curl), $"{curl} is required (apt-get install curl)");
        var file = Path.Combine(server.Repository.Root, "curl-bytes.json");
        await File.WriteAllTextAsync(file, """{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["dog","x"]},{"name":"numbers","shape":[2],"datatype":"BYTES","data":["8","-1"]}],"outputs":[{"name":"label"},{"name":"formatted"}]}""");
        var psi = new System.Diagnostics.ProcessStartInfo(curl, ["-sS", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + file,
            $"http://127.0.0.1:{server.HttpPort}/v2/models/strings/infer"]) { RedirectStandardOutput = true };
        using (var p = System.Diagnostics.Process.Start(psi)!)
        {
            var body = JsonDocument.Parse(await p.StandardOutput.ReadToEndAsync()).RootElement;
            await p.WaitForExitAsync();
            var outs = body.GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!);
            Assert.Equal([1L, -1], outs["label"].GetProperty("data").EnumerateArray().Select(e => e.GetInt64()));
            Assert.Equal(["16", "-2"], outs["formatted"].GetProperty("data").EnumerateArray().Select(e => e.GetString()));
        }

        // Node's @grpc/grpc-js with bytes_contents (the same cached install as NodeClientTests).
        Assert.True(File.Exists("/usr/bin/node") && File.Exists("/usr/bin/npm"), "node and npm are required (apt-get install nodejs npm)");
        var dir = Path.Combine(Path.GetTempPath(), "nabla-serving-grpc-js-1.14.7");
        Directory.CreateDirectory(dir);
        if (!Directory.Exists(Path.Combine(dir, "node_modules", "@grpc", "grpc-js")) || !Directory.Exists(Path.Combine(dir, "node_modules", "@grpc", "proto-loader")))
        {
            var install = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("/usr/bin/npm",
                ["install", "--no-audit", "--no-fund", "--silent", "--prefix", dir, "@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1"]) { WorkingDirectory = dir })!;
            await install.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(240));
            Assert.Equal(0, install.ExitCode);
        }
        File.Copy(Path.Combine(AppContext.BaseDirectory, "node", "bytes_client.js"), Path.Combine(dir, "bytes_client.js"), overwrite: true);
        var node = new System.Diagnostics.ProcessStartInfo("/usr/bin/node", ["bytes_client.js", Path.Combine(AppContext.BaseDirectory, "protos"), $"127.0.0.1:{server.GrpcPort}"])
        { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
        using var n = System.Diagnostics.Process.Start(node)!;
        var stdout = n.StandardOutput.ReadToEndAsync();
        var stderr = n.StandardError.ReadToEndAsync();
        await n.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(n.ExitCode == 0, $"node exited {n.ExitCode}: {await stderr}");
        var r = JsonDocument.Parse((await stdout).Trim().Split('\n')[^1]).RootElement;
        Assert.Equal("node-bytes", r.GetProperty("id").GetString());
        Assert.Equal(["BYTES", "INT64"], r.GetProperty("datatypes").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["cat", "bird", "ünïcode"], r.GetProperty("echo").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal([0L, 2, -1], r.GetProperty("label").EnumerateArray().Select(e => e.GetInt64()));
    }

    [Fact]
    public async Task GrpcBytesContentsAndRawContents()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var typed = new ModelInferRequest { ModelName = "strings", Id = "g1" };
        typed.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "text", Datatype = "BYTES", Shape = { 5 }, Contents = new InferTensorContents { BytesContents = { Text.Select(ByteString.CopyFromUtf8) } } });
        typed.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "numbers", Datatype = "BYTES", Shape = { 5 }, Contents = new InferTensorContents { BytesContents = { Numbers.Select(ByteString.CopyFromUtf8) } } });
        var r = await client.ModelInferAsync(typed);
        Assert.Equal("g1", r.Id);
        var expected = StringModel.OnnxRuntime(Text, Numbers);
        for (int i = 0; i < r.Outputs.Count; i++)
        {
            var o = r.Outputs[i];
            var raw = r.RawOutputContents[i].Span;
            object[] values = o.Datatype switch
            {
                "BYTES" => [.. StringModel.ParseLengthPrefixed(raw).Select(b => (object)Encoding.UTF8.GetString(b))],
                "INT64" => [.. System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(raw).ToArray().Select(v => (object)v)],
                _ => [.. System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(raw).ToArray().Select(v => (object)v)],
            };
            AssertMatches(expected, o.Name, [.. o.Shape], values);
        }

        // The same through raw_input_contents, with the length-prefixed layout.
        var rawReq = new ModelInferRequest { ModelName = "strings" };
        rawReq.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "text", Datatype = "BYTES", Shape = { 5 } });
        rawReq.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "numbers", Datatype = "BYTES", Shape = { 5 } });
        rawReq.RawInputContents.Add(ByteString.CopyFrom(StringModel.LengthPrefixed(Text.Select(Encoding.UTF8.GetBytes))));
        rawReq.RawInputContents.Add(ByteString.CopyFrom(StringModel.LengthPrefixed(Numbers.Select(Encoding.UTF8.GetBytes))));
        rawReq.Outputs.Add(new ModelInferRequest.Types.InferRequestedOutputTensor { Name = "echo" });
        var r2 = await client.ModelInferAsync(rawReq);
        Assert.Equal(Text, StringModel.ParseLengthPrefixed(r2.RawOutputContents[0].Span).Select(b => Encoding.UTF8.GetString(b)));

        // BYTES in the wrong typed field is INVALID_ARGUMENT.
        var wrong = new ModelInferRequest { ModelName = "strings" };
        wrong.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "text", Datatype = "BYTES", Shape = { 1 }, Contents = new InferTensorContents { IntContents = { 1 } } });
        wrong.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "numbers", Datatype = "BYTES", Shape = { 1 }, Contents = new InferTensorContents { BytesContents = { ByteString.CopyFromUtf8("1") } } });
        var e = await Assert.ThrowsAsync<global::Grpc.Core.RpcException>(async () => await client.ModelInferAsync(wrong));
        Assert.Equal(global::Grpc.Core.StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("bytes_contents", e.Status.Detail);
    }

    [Fact]
    public async Task BatchedStringRequestsEachGetTheirOwnRows()
    {
        // 8 concurrent requests of 1 or 2 rows; the batcher may merge any of them, each must get back its own rows.
        var tasks = Enumerable.Range(0, 8).Select(async i =>
        {
            string[] text = i % 2 == 0 ? [$"t{i}", "dog"] : [$"only{i}"];
            string[] nums = [.. text.Select((_, j) => (i * 10 + j).ToString(CultureInfo.InvariantCulture))];
            var json = $$"""{"inputs":[{"name":"text","shape":[{{text.Length}}],"datatype":"BYTES","data":{{StringArray(text)}}},{"name":"numbers","shape":[{{text.Length}}],"datatype":"BYTES","data":{{StringArray(nums)}}}]}""";
            var (status, body) = await Json.Post(server.Http, "/v2/models/strings_batched/infer", json);
            Assert.True(status == 200, body.ToString());
            var outs = body.GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!);
            Assert.Equal(text, outs["echo"].GetProperty("data").EnumerateArray().Select(e => e.GetString()));
            Assert.Equal([text.Length, 2L], outs["pair"].GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
            var pair = outs["pair"].GetProperty("data").EnumerateArray().Select(e => (object)e.GetString()!).ToArray();
            var expected = StringModel.OnnxRuntime(text, nums);
            AssertMatches(expected, "pair", [text.Length, 2], pair);
        }).ToList();
        await Task.WhenAll(tasks);
        var (_, stats) = await Json.Get(server.Http, "/v2/models/strings_batched/stats");
        var s = stats.GetProperty("model_stats")[0];
        Assert.Equal(12, s.GetProperty("inference_count").GetInt64());
    }

    [Fact]
    public void DataMovementOperatorsOnStringsMatchOnnxRuntime()
    {
        // ops.onnx: Transpose, Flatten, Gather, Slice, Tile, Split, Expand, Squeeze, Concat with Constant value_strings,
        // Shape, Size and Cast string → int64, each output compared with ONNX Runtime on the same file.
        var path = Path.Combine(Path.GetDirectoryName(StringModel.Path)!, "ops.onnx");
        string[] s = ["a", "bb", "", "dög", "e\u0000f", "z"];
        var nabla = OnnxModel.Load(path).Run(new Dictionary<string, Tensor> { ["s"] = StringTensor.FromStrings(s, 2, 3).ToCarrier() });
        using var session = new InferenceSession(path);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("s", new DenseTensor<string>(s, [2, 3]))]);
        Assert.Equal(12, results.Count);
        foreach (var v in results)
        {
            var mine = nabla[v.Name];
            if (session.OutputMetadata[v.Name].ElementType == typeof(string))
            {
                var expected = v.AsTensor<string>();
                var actual = StringTensor.FromCarrier(mine) ?? throw new Xunit.Sdk.XunitException($"{v.Name}: not a string tensor");
                Assert.Equal(expected.Dimensions.ToArray(), actual.Shape);
                Assert.Equal(expected.ToArray(), actual.ToStrings());
            }
            else
            {
                var expected = v.AsTensor<long>();
                Assert.Equal(expected.Dimensions.ToArray(), mine.Shape);
                Assert.Equal(expected.ToArray(), mine.ToArray<long>());
            }
        }
    }

    [Fact]
    public void StringGraphRunsInProcessAndRefusesMixedTypes()
    {
        var model = OnnxModel.Load(StringModel.Path);
        Assert.Equal(new HashSet<string> { "text", "numbers", "echo", "formatted", "pair", "tagged" }, model.StringValues.ToHashSet());
        var text = StringTensor.FromStrings(["cat", "x"], 2).ToCarrier();
        var outputs = model.Run(new Dictionary<string, Tensor> { ["text"] = text, ["numbers"] = StringTensor.FromStrings(["1", "2"], 2).ToCarrier() });
        Assert.Equal(["cat", "x"], StringTensor.FromCarrier(outputs["echo"])!.ToStrings());
        Assert.Equal(["cat", "2", "x", "4"], StringTensor.FromCarrier(outputs["pair"])!.ToStrings());
        Assert.Equal(["cat", "tag", "x", "tag"], StringTensor.FromCarrier(outputs["tagged"])!.ToStrings());
        Assert.Null(StringTensor.FromCarrier(outputs["label"]));
        // Numbers where the graph expects strings: the string kernels refuse the mix instead of guessing.
        var e = Assert.ThrowsAny<NablaException>(() => model.Run(new Dictionary<string, Tensor> { ["text"] = Tensor.FromArray(new long[] { 1, 2 }, 2), ["numbers"] = StringTensor.FromStrings(["1", "2"], 2).ToCarrier() }));
        Assert.Contains("LabelEncoder", e.Message);
        Assert.Contains("the input is int64, but the keys are string", e.Message);
    }
}
