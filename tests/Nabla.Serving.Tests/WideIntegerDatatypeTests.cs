using System.Globalization;
using System.Net.Http.Headers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Nabla.Serving.Grpc;
using Xunit;
using static Nabla.Serving.Tests.OnnxProto;

namespace Nabla.Serving.Tests;

/// <summary>
/// A small ONNX model written field by field (onnx.proto numbers) over INT16, UINT16, UINT32 and UINT64 inputs of
/// shape [batch, 3]: for each type T an Identity (<c>id_T</c>) and an Add of the input to itself (<c>twice_T</c>,
/// which wraps around), plus a Cast of the UINT32 input to INT64 (<c>u32_as_i64</c>).
/// </summary>
static class WideIntegerModel
{
    public static readonly (string wire, int onnx)[] Types = [("INT16", 5), ("UINT16", 4), ("UINT32", 12), ("UINT64", 13)];

    // NodeProto: input 1, output 2, name 3, op_type 4, attribute 5 (AttributeProto: name 1, i 3, type 20 = INT 2).
    static byte[] Node(string op, string name, string[] inputs, string output, byte[]? attribute = null) => Msg(n =>
    {
        foreach (var i in inputs) Str(n, 1, i);
        Str(n, 2, output);
        Str(n, 3, name);
        Str(n, 4, op);
        if (attribute is not null) Bytes(n, 5, attribute);
    });

    public static byte[] Build() => Msg(m =>
    {
        Int(m, 1, 8);   // ir_version
        var graph = Msg(g =>
        {
            foreach (var (wire, _) in Types)
            {
                Bytes(g, 1, Node("Identity", "id_" + wire, ["x_" + wire], "id_" + wire));
                Bytes(g, 1, Node("Add", "twice_" + wire, ["x_" + wire, "x_" + wire], "twice_" + wire));
            }
            Bytes(g, 1, Node("Cast", "cast", ["x_UINT32"], "u32_as_i64", Msg(a => { Str(a, 1, "to"); Int(a, 3, 7); Int(a, 20, 2); })));
            Str(g, 2, "wide_integers");
            foreach (var (wire, code) in Types) Bytes(g, 11, BatchBy3("x_" + wire, code));
            foreach (var (wire, code) in Types) Bytes(g, 12, BatchBy3("id_" + wire, code));
            foreach (var (wire, code) in Types) Bytes(g, 12, BatchBy3("twice_" + wire, code));
            Bytes(g, 12, BatchBy3("u32_as_i64", 7));
        });
        Bytes(m, 7, graph);
        Bytes(m, 8, Msg(op => { Str(op, 1, ""); Int(op, 2, 13); }));
    });
}

public sealed class WideIntegerServerFixture : ServerFixture
{
    protected override void Configure(ServingOptions options)
    {
        TempRepository.WriteModel(options.ModelRepository, "wide", WideIntegerModel.Build(), """{ "max_batch_size": 4 }""");
    }
}

/// <summary>INT16, UINT16, UINT32 and UINT64 requests served over REST JSON, the binary extension and gRPC, in and out.</summary>
public sealed class WideIntegerDatatypeTests(WideIntegerServerFixture server) : IClassFixture<WideIntegerServerFixture>
{
    // Two rows of three values each, extremes included; the expected results are computed below with C# arithmetic.
    static readonly short[] I16 = [short.MinValue, -1, 0, 1, 12345, short.MaxValue];
    static readonly ushort[] U16 = [0, 1, 255, 32768, 65534, ushort.MaxValue];
    static readonly uint[] U32 = [0, 1, 65536, 1u << 31, uint.MaxValue - 1, uint.MaxValue];
    static readonly ulong[] U64 = [0, 1, (1UL << 53) + 1, 1UL << 63, ulong.MaxValue - 1, ulong.MaxValue];

    static string[] Texts(string wire) => wire switch
    {
        "INT16" => [.. I16.Select(v => v.ToString(CultureInfo.InvariantCulture))],
        "UINT16" => [.. U16.Select(v => v.ToString(CultureInfo.InvariantCulture))],
        "UINT32" => [.. U32.Select(v => v.ToString(CultureInfo.InvariantCulture))],
        _ => [.. U64.Select(v => v.ToString(CultureInfo.InvariantCulture))],
    };

    /// <summary>x + x in the type itself: the low bits of the sum.</summary>
    static string[] Twice(string wire) => wire switch
    {
        "INT16" => [.. I16.Select(v => unchecked((short)(v + v)).ToString(CultureInfo.InvariantCulture))],
        "UINT16" => [.. U16.Select(v => unchecked((ushort)(v + v)).ToString(CultureInfo.InvariantCulture))],
        "UINT32" => [.. U32.Select(v => unchecked(v + v).ToString(CultureInfo.InvariantCulture))],
        _ => [.. U64.Select(v => unchecked(v + v).ToString(CultureInfo.InvariantCulture))],
    };

    static byte[] Raw(string wire) => wire switch
    {
        "INT16" => MemoryMarshal.AsBytes<short>(I16).ToArray(),
        "UINT16" => MemoryMarshal.AsBytes<ushort>(U16).ToArray(),
        "UINT32" => MemoryMarshal.AsBytes<uint>(U32).ToArray(),
        _ => MemoryMarshal.AsBytes<ulong>(U64).ToArray(),
    };

    static byte[] TwiceRaw(string wire) => wire switch
    {
        "INT16" => MemoryMarshal.AsBytes<short>(I16.Select(v => unchecked((short)(v + v))).ToArray()).ToArray(),
        "UINT16" => MemoryMarshal.AsBytes<ushort>(U16.Select(v => unchecked((ushort)(v + v))).ToArray()).ToArray(),
        "UINT32" => MemoryMarshal.AsBytes<uint>(U32.Select(v => unchecked(v + v)).ToArray()).ToArray(),
        _ => MemoryMarshal.AsBytes<ulong>(U64.Select(v => unchecked(v + v)).ToArray()).ToArray(),
    };

    static string InputsJson() => string.Join(",", WideIntegerModel.Types.Select(t =>
        $$"""{"name":"x_{{t.wire}}","shape":[2,3],"datatype":"{{t.wire}}","data":[{{string.Join(",", Texts(t.wire))}}]}"""));

    [Fact]
    public async Task MetadataNamesTheWideIntegerTypes()
    {
        var (status, body) = await Json.Get(server.Http, "/v2/models/wide");
        Assert.Equal(200, status);
        var inputs = body.GetProperty("inputs").EnumerateArray().ToDictionary(e => e.GetProperty("name").GetString()!, e => e.GetProperty("datatype").GetString());
        foreach (var (wire, _) in WideIntegerModel.Types) Assert.Equal(wire, inputs["x_" + wire]);
        var outputs = body.GetProperty("outputs").EnumerateArray().ToDictionary(e => e.GetProperty("name").GetString()!, e => e.GetProperty("datatype").GetString());
        Assert.Equal("INT64", outputs["u32_as_i64"]);
        Assert.Equal("UINT64", outputs["twice_UINT64"]);
    }

    [Fact]
    public async Task JsonInAndOutIsExact()
    {
        var (status, body) = await Json.Post(server.Http, "/v2/models/wide/infer", $$"""{"inputs":[{{InputsJson()}}]}""");
        Assert.True(status == 200, body.ToString());
        var outputs = body.GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!);
        foreach (var (wire, _) in WideIntegerModel.Types)
        {
            var id = outputs["id_" + wire];
            Assert.Equal(wire, id.GetProperty("datatype").GetString());
            Assert.Equal([2L, 3], id.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
            // Compared as the JSON number text: UINT64 values past 2^53 would be equal as doubles.
            Assert.Equal(Texts(wire), id.GetProperty("data").EnumerateArray().Select(e => e.GetRawText()));
            Assert.Equal(Twice(wire), outputs["twice_" + wire].GetProperty("data").EnumerateArray().Select(e => e.GetRawText()));
        }
        Assert.Equal(U32.Select(v => (long)v), outputs["u32_as_i64"].GetProperty("data").EnumerateArray().Select(e => e.GetInt64()));
    }

    [Theory]
    [InlineData("INT16", "32768")]
    [InlineData("INT16", "-32769")]
    [InlineData("UINT16", "65536")]
    [InlineData("UINT16", "-1")]
    [InlineData("UINT32", "4294967296")]
    [InlineData("UINT64", "18446744073709551616")]
    [InlineData("UINT64", "-1")]
    [InlineData("UINT64", "1.5")]
    public async Task OutOfRangeJsonElementsAre400NamingTheElement(string wire, string bad)
    {
        var inputs = InputsJson().Replace($"\"datatype\":\"{wire}\",\"data\":[{Texts(wire)[0]},", $"\"datatype\":\"{wire}\",\"data\":[{bad},", StringComparison.Ordinal);
        Assert.Contains(bad, inputs);
        var msg = Json.AssertError(await Json.Post(server.Http, "/v2/models/wide/infer", $$"""{"inputs":[{{inputs}}]}"""), 400);
        Assert.Contains($"input 'x_{wire}'", msg);
        Assert.Contains("data element 0", msg);
    }

    [Fact]
    public async Task BinaryExtensionInAndOutIsByteExact()
    {
        var raws = WideIntegerModel.Types.Select(t => Raw(t.wire)).ToArray();
        var inputs = string.Join(",", WideIntegerModel.Types.Select((t, i) => $$$"""{"name":"x_{{{t.wire}}}","shape":[2,3],"datatype":"{{{t.wire}}}","parameters":{"binary_data_size":{{{raws[i].Length}}}}}"""));
        var header = Encoding.UTF8.GetBytes($$$"""{"inputs":[{{{inputs}}}],"parameters":{"binary_data_output":true}}""");
        var (json, bytes, n) = await Json.PostBinary(server.Http, "/v2/models/wide/infer", (byte[])[.. header, .. raws.SelectMany(r => r)], header.Length);
        int offset = n, seen = 0;
        foreach (var o in json.GetProperty("outputs").EnumerateArray())
        {
            var name = o.GetProperty("name").GetString()!;
            int size = o.GetProperty("parameters").GetProperty("binary_data_size").GetInt32();
            var got = bytes.AsSpan(offset, size).ToArray();
            offset += size;
            if (name == "u32_as_i64")
            {
                Assert.Equal(MemoryMarshal.AsBytes<long>(U32.Select(v => (long)v).ToArray()).ToArray(), got);
                continue;
            }
            var wire = name[(name.IndexOf('_') + 1)..];
            Assert.Equal(wire, o.GetProperty("datatype").GetString());
            Assert.Equal(name.StartsWith("id_", StringComparison.Ordinal) ? Raw(wire) : TwiceRaw(wire), got);
            seen++;
        }
        Assert.Equal(8, seen);
        Assert.Equal(bytes.Length, offset);
    }

    [Fact]
    public async Task GrpcTypedContentsAndRawContents()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        // Typed contents: INT16 in int_contents, UINT16 and UINT32 in uint_contents, UINT64 in uint64_contents.
        var typed = new ModelInferRequest { ModelName = "wide" };
        void Add(string wire, InferTensorContents c) => typed.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "x_" + wire, Datatype = wire, Shape = { 2, 3 }, Contents = c });
        Add("INT16", new InferTensorContents { IntContents = { I16.Select(v => (int)v) } });
        Add("UINT16", new InferTensorContents { UintContents = { U16.Select(v => (uint)v) } });
        Add("UINT32", new InferTensorContents { UintContents = { U32 } });
        Add("UINT64", new InferTensorContents { Uint64Contents = { U64 } });
        var r = await client.ModelInferAsync(typed);
        AssertOutputs(r);

        var raw = new ModelInferRequest { ModelName = "wide" };
        foreach (var (wire, _) in WideIntegerModel.Types)
        {
            raw.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "x_" + wire, Datatype = wire, Shape = { 2, 3 } });
            raw.RawInputContents.Add(ByteString.CopyFrom(Raw(wire)));
        }
        AssertOutputs(await client.ModelInferAsync(raw));

        static void AssertOutputs(ModelInferResponse r)
        {
            Assert.Equal(r.Outputs.Count, r.RawOutputContents.Count);
            Assert.Equal(9, r.Outputs.Count);
            for (int i = 0; i < r.Outputs.Count; i++)
            {
                var name = r.Outputs[i].Name;
                var got = r.RawOutputContents[i].ToByteArray();
                if (name == "u32_as_i64") { Assert.Equal(MemoryMarshal.AsBytes<long>(U32.Select(v => (long)v).ToArray()).ToArray(), got); continue; }
                var wire = name[(name.IndexOf('_') + 1)..];
                Assert.Equal(wire, r.Outputs[i].Datatype);
                Assert.Equal([2L, 3], r.Outputs[i].Shape);
                Assert.Equal(name.StartsWith("id_", StringComparison.Ordinal) ? Raw(wire) : TwiceRaw(wire), got);
            }
        }
    }

    [Theory]
    [InlineData("UINT16")]
    [InlineData("INT16")]
    public async Task GrpcTypedContentsOutOfRangeAreInvalidArgument(string wire)
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var req = new ModelInferRequest { ModelName = "wide" };
        var contents = wire == "UINT16" ? new InferTensorContents { UintContents = { 0, 1, 2, 3, 4, 70000 } } : new InferTensorContents { IntContents = { 0, 1, 2, 3, 4, -40000 } };
        req.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "x_" + wire, Datatype = wire, Shape = { 2, 3 }, Contents = contents });
        var e = await Assert.ThrowsAsync<global::Grpc.Core.RpcException>(async () => await client.ModelInferAsync(req));
        Assert.Equal(global::Grpc.Core.StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains($"input 'x_{wire}'", e.Status.Detail);
        Assert.Contains("element 5", e.Status.Detail);
    }

    [Fact]
    public async Task GrpcTypedContentsInTheWrongFieldAreRefused()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var req = new ModelInferRequest { ModelName = "wide" };
        req.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "x_UINT64", Datatype = "UINT64", Shape = { 2, 3 }, Contents = new InferTensorContents { Int64Contents = { 1, 2, 3, 4, 5, 6 } } });
        var e = await Assert.ThrowsAsync<global::Grpc.Core.RpcException>(async () => await client.ModelInferAsync(req));
        Assert.Equal(global::Grpc.Core.StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("uint64_contents", e.Status.Detail);
    }
}
