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

/// <summary>Writes a small ONNX model by hand (field numbers of onnx.proto): one Identity per datatype, [-1, 3] in and out.</summary>
static class IdentityModel
{
    // ONNX TensorProto.DataType codes.
    public static readonly (string wire, int onnx)[] Types =
        [("BOOL", 9), ("UINT8", 2), ("INT8", 3), ("INT32", 6), ("INT64", 7), ("FP16", 10), ("BF16", 16), ("FP32", 1), ("FP64", 11)];

    public static byte[] Build() => Msg(m =>
    {
        m.WriteTag(1, WireFormat.WireType.Varint); m.WriteInt64(8);
        var graph = Msg(g =>
        {
            foreach (var (wire, _) in Types)
                Bytes(g, 1, Msg(n => { Str(n, 1, "in_" + wire); Str(n, 2, "out_" + wire); Str(n, 3, "id_" + wire); Str(n, 4, "Identity"); }));
            Str(g, 2, "identity_all");
            foreach (var (wire, code) in Types) Bytes(g, 11, BatchBy3("in_" + wire, code));
            foreach (var (wire, code) in Types) Bytes(g, 12, BatchBy3("out_" + wire, code));
        });
        Bytes(m, 7, graph);
        Bytes(m, 8, Msg(op => { Str(op, 1, ""); op.WriteTag(2, WireFormat.WireType.Varint); op.WriteInt64(13); }));
    });
}

public sealed class IdentityServerFixture : ServerFixture
{
    protected override void Configure(ServingOptions options)
    {
        // max_batch_size 4: the exposed shape is [-1, 3] and the batch dim is checked against it.
        TempRepository.WriteModel(options.ModelRepository, "identity", IdentityModel.Build(), """{ "max_batch_size": 4 }""");
    }
}

/// <summary>Every datatype Nabla holds, through JSON, the binary extension and gRPC (typed contents and raw), unchanged.</summary>
public sealed class DatatypeTests(IdentityServerFixture server) : IClassFixture<IdentityServerFixture>
{
    static readonly Dictionary<string, string> JsonValues = new()
    {
        ["BOOL"] = "[true,false,true,false,false,true]",
        ["UINT8"] = "[0,1,2,127,200,255]",
        ["INT8"] = "[-128,-1,0,1,2,127]",
        ["INT32"] = "[-2147483648,-1,0,1,2,2147483647]",
        ["INT64"] = "[-9223372036854775808,-1,0,1,2,9223372036854775807]",
        ["FP16"] = "[0.5,-1.5,2,0,65504,-0.25]",
        ["BF16"] = "[0.5,-1.5,2,0,256,-0.25]",
        ["FP32"] = "[0.5,-1.5,3.25,0,1e30,-1e-30]",
        ["FP64"] = "[0.5,-1.5,3.25,0,1e300,-1e-300]",
    };

    [Fact]
    public async Task MetadataShowsTheBatchDim()
    {
        var (status, body) = await Json.Get(server.Http, "/v2/models/identity");
        Assert.Equal(200, status);
        Assert.Equal(9, body.GetProperty("inputs").GetArrayLength());
        Assert.Equal([-1L, 3], body.GetProperty("inputs")[0].GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
    }

    [Fact]
    public async Task JsonRoundTripOfEveryDatatype()
    {
        var inputs = string.Join(",", IdentityModel.Types.Select(t => $$"""{"name":"in_{{t.wire}}","shape":[2,3],"datatype":"{{t.wire}}","data":{{JsonValues[t.wire]}}}"""));
        var (status, body) = await Json.Post(server.Http, "/v2/models/identity/infer", $$"""{"inputs":[{{inputs}}]}""");
        Assert.True(status == 200, body.ToString());
        foreach (var o in body.GetProperty("outputs").EnumerateArray())
        {
            var wire = o.GetProperty("name").GetString()!["out_".Length..];
            Assert.Equal(wire, o.GetProperty("datatype").GetString());
            Assert.Equal([2L, 3], o.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
            var expected = JsonDocument.Parse(JsonValues[wire]).RootElement.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? e.GetDouble() : e.GetBoolean() ? 1 : 0).ToArray();
            var actual = o.GetProperty("data").EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? e.GetDouble() : e.GetBoolean() ? 1 : 0).ToArray();
            Assert.Equal(expected, actual);
        }
    }

    [Theory]
    [InlineData("UINT8", "[0,1,2,3,4,256]")]
    [InlineData("INT8", "[0,1,2,3,4,-129]")]
    [InlineData("INT32", "[0,1,2,3,4,2147483648]")]
    [InlineData("INT64", "[0,1,2,3,4,1.5]")]
    [InlineData("BOOL", "[true,false,true,false,true,\"yes\"]")]
    [InlineData("FP32", "[0,1,2,3,4,null]")]
    public async Task OutOfRangeOrWrongKindElementsAre400(string wire, string data)
    {
        var json = $$"""{"inputs":[{"name":"in_{{wire}}","shape":[2,3],"datatype":"{{wire}}","data":{{data}}}],"outputs":[{"name":"out_{{wire}}"}]}""";
        var body = await Json.Post(server.Http, "/v2/models/identity/infer", json);
        // NOTE: the other inputs are missing too; the element error is found first or the missing-input one: both are 400.
        Json.AssertError(body, 400);
    }

    [Theory]
    [InlineData("UINT16", "[0,1,2,3,4,65535]")]
    [InlineData("UINT32", "[0,1,2,3,4,4294967295]")]
    [InlineData("UINT64", "[0,1,2,3,4,18446744073709551615]")]
    [InlineData("INT16", "[0,1,2,3,4,-32768]")]
    public async Task WideIntegerTypesSentToAnFp32InputAre400NamingTheInput(string wire, string data)
    {
        // Sent to an FP32 input: the mismatch is named (with the input) before anything is decoded. (Served to inputs
        // of their own type: WideIntegerDatatypeTests.)
        var json = $$"""{"inputs":[{"name":"in_FP32","shape":[2,3],"datatype":"{{wire}}","data":{{data}}}],"outputs":[{"name":"out_FP32"}]}""";
        var msg = Json.AssertError(await Json.Post(server.Http, "/v2/models/identity/infer", json), 400);
        Assert.Contains("input 'in_FP32'", msg);
        Assert.Contains($"datatype {wire} does not match the model's FP32", msg);
        // And the same over gRPC with raw contents.
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var req = new ModelInferRequest { ModelName = "identity" };
        req.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "in_FP32", Datatype = wire, Shape = { 2, 3 } });
        req.RawInputContents.Add(ByteString.CopyFrom(new byte[6 * (wire is "UINT16" or "INT16" ? 2 : wire == "UINT32" ? 4 : 8)]));
        var e = await Assert.ThrowsAsync<global::Grpc.Core.RpcException>(async () => await client.ModelInferAsync(req));
        Assert.Equal(global::Grpc.Core.StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("input 'in_FP32'", e.Status.Detail);
        Assert.Contains(wire, e.Status.Detail);
    }

    [Fact]
    public async Task BatchOverMaxIs400()
    {
        var json = """{"inputs":[{"name":"in_FP32","shape":[5,3],"datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}""";
        Assert.Contains("max_batch_size", Json.AssertError(await Json.Post(server.Http, "/v2/models/identity/infer", json), 400));
    }

    static byte[] RawOf(string wire, Random rng, int n)
    {
        int size = wire switch { "BOOL" or "UINT8" or "INT8" => 1, "FP16" or "BF16" => 2, "INT32" or "FP32" => 4, _ => 8 };
        var b = new byte[n * size];
        rng.NextBytes(b);
        if (wire == "BOOL") for (int i = 0; i < b.Length; i++) b[i] &= 1;
        // NOTE: random float bits may be NaN; NaN payloads need not survive, so clear the exponent's top bit.
        if (wire is "FP16" or "BF16" or "FP32" or "FP64") for (int i = size - 1; i < b.Length; i += size) b[i] &= 0x3F;
        return b;
    }

    [Fact]
    public async Task BinaryExtensionRoundTripIsByteExact()
    {
        var rng = new Random(1);
        var raws = IdentityModel.Types.Select(t => RawOf(t.wire, rng, 6)).ToArray();
        var inputs = string.Join(",", IdentityModel.Types.Select((t, i) => $$$"""{"name":"in_{{{t.wire}}}","shape":[2,3],"datatype":"{{{t.wire}}}","parameters":{"binary_data_size":{{{raws[i].Length}}}}}"""));
        var header = Encoding.UTF8.GetBytes($$$"""{"inputs":[{{{inputs}}}],"parameters":{"binary_data_output":true}}""");
        var (json, bytes, n) = await Json.PostBinary(server.Http, "/v2/models/identity/infer", (byte[])[.. header, .. raws.SelectMany(r => r)], header.Length);
        int offset = n;
        foreach (var o in json.GetProperty("outputs").EnumerateArray())
        {
            var wire = o.GetProperty("name").GetString()!["out_".Length..];
            int size = o.GetProperty("parameters").GetProperty("binary_data_size").GetInt32();
            var expected = raws[Array.FindIndex(IdentityModel.Types, t => t.wire == wire)];
            Assert.Equal(expected, bytes.AsSpan(offset, size).ToArray());
            offset += size;
        }
        Assert.Equal(bytes.Length, offset);
    }

    [Fact]
    public async Task GrpcRawAndTypedContents()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var rng = new Random(2);
        var raw = new ModelInferRequest { ModelName = "identity" };
        var raws = new List<byte[]>();
        foreach (var (wire, _) in IdentityModel.Types)
        {
            raw.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "in_" + wire, Datatype = wire, Shape = { 2, 3 } });
            var b = RawOf(wire, rng, 6);
            raws.Add(b);
            raw.RawInputContents.Add(ByteString.CopyFrom(b));
        }
        var r = await client.ModelInferAsync(raw);
        Assert.Equal(IdentityModel.Types.Length, r.RawOutputContents.Count);
        for (int i = 0; i < r.Outputs.Count; i++)
        {
            int k = Array.FindIndex(IdentityModel.Types, t => "out_" + t.wire == r.Outputs[i].Name);
            Assert.Equal(raws[k], r.RawOutputContents[i].ToByteArray());
        }

        // Typed contents for the types that have a field (FP16/BF16 travel raw only).
        var typed = new ModelInferRequest { ModelName = "identity" };
        void Add(string wire, InferTensorContents c) => typed.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "in_" + wire, Datatype = wire, Shape = { 1, 3 }, Contents = c });
        Add("BOOL", new InferTensorContents { BoolContents = { true, false, true } });
        Add("UINT8", new InferTensorContents { UintContents = { 0, 7, 255 } });
        Add("INT8", new InferTensorContents { IntContents = { -128, 0, 127 } });
        Add("INT32", new InferTensorContents { IntContents = { int.MinValue, 0, int.MaxValue } });
        Add("INT64", new InferTensorContents { Int64Contents = { long.MinValue, 0, long.MaxValue } });
        Add("FP32", new InferTensorContents { Fp32Contents = { 1.5f, -2f, 0f } });
        Add("FP64", new InferTensorContents { Fp64Contents = { 1e300, -2, 0 } });
        typed.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "in_FP16", Datatype = "FP16", Shape = { 1, 3 } });
        typed.Inputs.Add(new ModelInferRequest.Types.InferInputTensor { Name = "in_BF16", Datatype = "BF16", Shape = { 1, 3 } });
        // Mixing typed contents with raw is refused, so FP16/BF16 cannot come along here: expect INVALID_ARGUMENT.
        var e = await Assert.ThrowsAsync<global::Grpc.Core.RpcException>(async () => await client.ModelInferAsync(typed));
        Assert.Equal(global::Grpc.Core.StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("raw_input_contents", e.Status.Detail);
    }
}
