using System.Globalization;
using System.Net.Http.Headers;
using System.Runtime.InteropServices;
using System.Text.Json;
using Google.Protobuf;
using Microsoft.Extensions.DependencyInjection;
using Xunit;
using static Nabla.Serving.Tests.OnnxProto;

namespace Nabla.Serving.Tests;

/// <summary>
/// Relu and Identity of one input of [batch, 65536] floats: 256 KB a row, so the decoded inputs and the outputs are
/// recyclable tensors (at least 85,000 bytes) and the server's disposal of them is exercised.
/// </summary>
static class WideModel
{
    public const int Width = 65536;

    /// <param name="identity">with the "same" output; without it the input is no output, so the run alone decides its fate</param>
    /// <param name="sameOp">the operator that makes "same" from the input: Identity (the input tensor itself) or Flatten
    /// at axis 2 (a [b·W, 1] view of it, sharing its memory)</param>
    public static byte[] Build(bool identity = true, string sameOp = "Identity") => Msg(m =>
    {
        m.WriteTag(1, WireFormat.WireType.Varint); m.WriteInt64(8);
        var graph = Msg(g =>
        {
            Bytes(g, 1, Msg(n => { Str(n, 1, "x"); Str(n, 2, "relu"); Str(n, 3, "r"); Str(n, 4, "Relu"); }));
            if (identity) Bytes(g, 1, Msg(n => { Str(n, 1, "x"); Str(n, 2, "same"); Str(n, 3, "i"); Str(n, 4, sameOp);
                // Flatten at axis 2: [b, W] becomes [b·W, 1], a reshape that makes a new view of the same memory.
                if (sameOp == "Flatten") Bytes(n, 5, Msg(a => { Str(a, 1, "axis"); Int(a, 3, 2); Int(a, 20, 2); })); }));
            Str(g, 2, "wide");
            Bytes(g, 11, Info("x"));
            Bytes(g, 12, Info("relu"));
            if (identity) Bytes(g, 12, sameOp == "Flatten" ? Info("same", "rows", 1) : Info("same"));
        });
        Bytes(m, 7, graph);
        Bytes(m, 8, Msg(op => { Str(op, 1, ""); op.WriteTag(2, WireFormat.WireType.Varint); op.WriteInt64(13); }));
    });

    static byte[] Info(string name, string first = "batch", int second = Width) => Msg(o =>
    {
        Str(o, 1, name);
        var shape = Msg(s => { Bytes(s, 1, Msg(d => Str(d, 2, first))); Bytes(s, 1, Msg(d => Int(d, 1, second))); });
        Bytes(o, 2, Msg(t => Bytes(t, 1, Msg(tt => { Int(tt, 1, 1); Bytes(tt, 2, shape); }))));
    });

    /// <param name="flat">"same" is Flatten's [W, 1] (unbatched only)</param>
    public static string Config(string name, int maxBatch, string batching = "", bool identity = true, bool flat = false)
    {
        string dims = (maxBatch > 0 ? "" : "1, ") + Width;
        string Spec(string n, string d) => $"{{ \"name\": \"{n}\", \"data_type\": \"TYPE_FP32\", \"dims\": [ {d} ] }}";
        string outputs = identity ? Spec("relu", dims) + ", " + Spec("same", flat ? $"{Width}, 1" : dims) : Spec("relu", dims);
        return $"{{ \"name\": \"{name}\", \"max_batch_size\": {maxBatch}, \"input\": [ {Spec("x", dims)} ], \"output\": [ {outputs} ]{batching} }}";
    }

    /// <summary>A row of distinct values, half of them negative, different for every <paramref name="seed"/>.</summary>
    public static float[] Row(int seed)
    {
        var r = new float[Width];
        for (int i = 0; i < r.Length; i++) r[i] = (i % 2 == 0 ? -1 : 1) * (seed * 0.5f + i * 1e-3f);
        return r;
    }
}

public sealed class WideServerFixture : ServerFixture
{
    protected override void Configure(ServingOptions options)
    {
        options.MaxRequestBytes = 4 << 20;
        TempRepository.WriteModel(options.ModelRepository, "wide", WideModel.Build(), WideModel.Config("wide", 0));
        TempRepository.WriteModel(options.ModelRepository, "wide_flat", WideModel.Build(sameOp: "Flatten"), WideModel.Config("wide_flat", 0, flat: true));
        TempRepository.WriteModel(options.ModelRepository, "wide_relu", WideModel.Build(identity: false), WideModel.Config("wide_relu", 0, identity: false));
        TempRepository.WriteModel(options.ModelRepository, "wide_batched", WideModel.Build(),
            WideModel.Config("wide_batched", 8, """, "dynamic_batching": { "max_queue_delay_microseconds": 50000 }"""));
    }
}

/// <summary>
/// The server gives a request's decoded inputs back to the buffer cache after the run and its outputs after the response
/// is encoded, so the next request reuses that memory; these tests check that nothing is given back too early: every
/// response carries its own request's results, also when the batcher merges requests and splits the outputs.
/// </summary>
public sealed class RecyclingTests(WideServerFixture server) : IClassFixture<WideServerFixture>
{
    static InferInput Input(float[] data, Action<Tensor> seen) => new("x", "FP32", [1, WideModel.Width], (dt, dims, what) =>
    {
        var t = Tensor.FromBytes(MemoryMarshal.AsBytes(data.AsSpan()), DType.Float32, dims);
        seen(t);
        return t;
    });

    [Fact]
    public async Task InputsAreDisposedAfterTheRunAndOutputsWithTheResult()
    {
        var engine = server.App.Services.GetRequiredService<InferenceEngine>();
        var data = WideModel.Row(3);
        Tensor? x = null;
        var result = await engine.InferAsync("wide_relu", null, [Input(data, t => x = t)], null, true, default);
        Assert.NotNull(x);
        Assert.Throws<ObjectDisposedException>(() => x.ToArray<float>());   // back in the cache
        var relu = Assert.Single(result.Outputs).Value;
        Assert.Equal(data.Select(v => Math.Max(v, 0f)), relu.ToArray<float>());
        Assert.Equal(MemoryMarshal.AsBytes(relu.ToArray<float>().AsSpan()).ToArray(), relu.ToBytes());   // as the binary encoders read it
        result.Dispose();
        Assert.Throws<ObjectDisposedException>(() => relu.ToArray<float>());
    }

    [Fact]
    public async Task AnOutputThatIsTheInputOutlivesTheRun()
    {
        var engine = server.App.Services.GetRequiredService<InferenceEngine>();
        var data = WideModel.Row(4);
        using var result = await engine.InferAsync("wide", null, [Input(data, _ => { })], [new RequestedOutput("same", true)], true, default);
        Assert.Equal(data, Assert.Single(result.Outputs).Value.ToArray<float>());
    }

    /// <summary>An output that is a view of the input (Flatten of [1, W] to [W, 1] is a reshape, no copy): the engine
    /// disposes the input after the run, but the view still holds the memory, which goes back only with the result.</summary>
    [Fact]
    public async Task AnOutputThatViewsTheInputKeepsItsMemoryUntilTheResultGoes()
    {
        var engine = server.App.Services.GetRequiredService<InferenceEngine>();
        var data = WideModel.Row(5);
        Tensor? x = null;
        var result = await engine.InferAsync("wide_flat", null, [Input(data, t => x = t)], [new RequestedOutput("same", true)], true, default);
        var same = Assert.Single(result.Outputs).Value;
        Assert.NotNull(x);
        Assert.NotSame(x, same);
        Assert.Same(x.Storage, same.Storage);   // a view, so this is the case under test
        using (var other = Tensor.Full([1, WideModel.Width], 42f))   // would take the input's array had it gone back
            Assert.Equal(data, same.ToArray<float>());
        Assert.Equal(MemoryMarshal.AsBytes(data.AsSpan()).ToArray(), same.ToBytes());
        result.Dispose();
        Assert.Throws<ObjectDisposedException>(() => same.ToArray<float>());
    }

    static async Task<(float[] Relu, float[] Same)> Send(HttpClient http, string model, float[] row)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, $"/v2/models/{model}/infer")
        {
            Content = new ByteArrayContent(MemoryMarshal.AsBytes(row.AsSpan()).ToArray()),
        };
        req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        req.Content.Headers.Add(RestApi.HeaderLengthName, "0");
        using var resp = await http.SendAsync(req);
        var bytes = await resp.Content.ReadAsByteArrayAsync();
        Assert.True(resp.IsSuccessStatusCode, System.Text.Encoding.UTF8.GetString(bytes));
        int n = int.Parse(resp.Headers.GetValues(RestApi.HeaderLengthName).Single(), CultureInfo.InvariantCulture);
        using var header = JsonDocument.Parse(bytes.AsMemory(0, n));
        var outputs = header.RootElement.GetProperty("outputs").EnumerateArray().ToList();
        var result = new Dictionary<string, float[]>();
        int at = n;
        foreach (var o in outputs)
        {
            int size = o.GetProperty("parameters").GetProperty("binary_data_size").GetInt32();
            result[o.GetProperty("name").GetString()!] = MemoryMarshal.Cast<byte, float>(bytes.AsSpan(at, size)).ToArray();
            at += size;
        }
        return (result["relu"], result["same"]);
    }

    [Fact]
    public async Task SequentialRequestsEachGetTheirOwnResults()
    {
        for (int i = 0; i < 12; i++)
        {
            var row = WideModel.Row(10 + i);
            var (relu, same) = await Send(server.Http, "wide", row);
            Assert.Equal(row.Select(v => Math.Max(v, 0f)), relu);
            Assert.Equal(row, same);
        }
    }

    [Fact]
    public async Task MergedBatchesSplitIntoEachRequestsOwnResults()
    {
        for (int round = 0; round < 3; round++)
        {
            var rows = Enumerable.Range(0, 6).Select(i => WideModel.Row(100 * round + i)).ToArray();
            var answers = await Task.WhenAll(rows.Select(r => Send(server.Http, "wide_batched", r)));
            for (int i = 0; i < rows.Length; i++)
            {
                Assert.Equal(rows[i].Select(v => Math.Max(v, 0f)), answers[i].Relu);
                Assert.Equal(rows[i], answers[i].Same);
            }
        }
        // The batcher did merge requests (else this test would not reach the split it is about).
        var (_, stats) = await Json.Get(server.Http, "/v2/models/wide_batched/stats");
        var s = stats.GetProperty("model_stats")[0];
        Assert.True(s.GetProperty("execution_count").GetInt64() < s.GetProperty("inference_count").GetInt64(), s.ToString());
    }
}
