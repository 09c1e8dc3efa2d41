using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The direct convolution kernel (<see cref="PackedConv2d"/>, AVX-512) storing each block of flat positions straight into
/// the output rows with masked stores, against the flat buffer it replaces (same bits) and the float64 eager convolution:
/// stride 1 and 2, rows narrower than a 16-lane half (one half then spans several rows), a partial group of eight channels,
/// asymmetric padding, batches, one and two threads. Every output element starts as NaN, so one left unwritten fails.
/// Changes process-wide switches, so it runs in the GEMM settings collection.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceDirectStoreTests
{
    // n, c, h, w, o, k, stride, pads (top, left, bottom, right)
    public static TheoryData<int, int, int, int, int, int, int, int[]> Cases() => new()
    {
        { 2, 1, 30, 70, 3, 5, 1, new[] { 2, 2, 2, 2 } },     // K = 25, 70 columns: two 32-position blocks per row and a tail
        { 2, 3, 12, 28, 10, 3, 1, new[] { 1, 1, 1, 1 } },    // ten channels: a full and a partial group of eight
        { 3, 1, 28, 28, 6, 5, 1, new[] { 2, 2, 2, 2 } },     // LeNet's first layer
        { 2, 6, 14, 14, 16, 5, 1, new[] { 0, 0, 0, 0 } },    // 10x10 output, 14-wide flat rows: a half spans two or three rows
        { 1, 8, 14, 14, 16, 5, 1, new[] { 2, 2, 2, 2 } },    // mnist-8's second layer
        { 1, 56, 9, 8, 25, 3, 1, new[] { 1, 0, 2, 1 } },     // asymmetric padding, 25 channels
        { 1, 3, 60, 61, 20, 7, 2, new[] { 3, 3, 2, 4 } },    // stride 2 over parity planes (ResNet's first layer's shape of kernel)
        { 2, 4, 33, 31, 9, 3, 2, new[] { 0, 1, 1, 0 } },     // stride 2, odd sizes, batch 2
        { 1, 3, 5, 1, 8, 3, 2, new[] { 1, 0, 1, 2 } },       // a 1-wide input at stride 2: one output column
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void RowStoresMatchTheFlatBufferAndTheReference(int n, int c, int h, int w, int o, int k, int stride, int[] pad)
    {
        var gen = new Generator(31);
        var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        var weight = Tensor.Randn([o, c, k, k], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var reference = ConvReference.Conv(Functional.Pad(x, [pad[1], pad[3], pad[0], pad[2]]), weight, bias, (stride, stride), (0, 0));
        foreach (var act in new[] { FusedActivation.None, FusedActivation.Relu })
        {
            var conv = new PackedConv2d(weight, bias, (stride, stride), (pad[0], pad[1], pad[2], pad[3]), (1, 1), 1, act);
            ConvReference.SameBitsAcrossSwitch(conv, x, act == FusedActivation.Relu ? reference.Relu() : reference,
                v => PackedConv2d.DirectStoreRows = v, on: true, restore: PackedConv2d.DirectStoreRows);
        }
    }
}
