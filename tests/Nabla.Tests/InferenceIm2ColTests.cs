using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The masked im2col rows of <see cref="PackedConv2d"/> (AVX-512, output rows of at most 32, stride 1) against the
/// scalar rows they replace (the same columns, so bit for bit the same outputs) and against the float64 eager convolution.
/// The cases put padding on every side, asymmetric and wider than the kernel's reach, dilation, widths either side of
/// 16 and 32, and run on the channel-tiled, GEMM (whole image and blocks of output rows) and folded-batch paths; the
/// stride-2 cases check that those keep the scalar rows unchanged. Without AVX-512 both runs take the scalar rows and only
/// the comparison with the reference means anything. Changes process-wide switches, so it runs in the GEMM settings
/// collection.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceIm2ColTests
{
    // n, c, h, w, o, k, stride, pads (top, left, bottom, right), dilation
    public static TheoryData<int, int, int, int, int, int, int, int[], int> Cases() => new()
    {
        { 1, 64, 7, 7, 64, 3, 1, new[] { 1, 1, 1, 1 }, 1 },      // ResNet's last stage: channel tiles, 7-wide rows
        { 1, 32, 14, 14, 64, 3, 2, new[] { 1, 1, 1, 1 }, 1 },    // stride 2 onto 7x7
        { 1, 24, 33, 33, 64, 3, 2, new[] { 1, 1, 1, 1 }, 1 },    // stride 2 (scalar rows), 17 outputs per row
        { 1, 24, 32, 32, 64, 3, 1, new[] { 1, 1, 1, 1 }, 1 },    // exactly 32 outputs per row: two full chunks
        { 1, 24, 33, 33, 64, 3, 1, new[] { 1, 1, 1, 1 }, 1 },    // 33: past the masked rows, the scalar rows
        { 1, 24, 16, 16, 64, 3, 1, new[] { 1, 1, 1, 1 }, 1 },    // exactly one chunk
        { 1, 24, 17, 15, 64, 3, 1, new[] { 2, 0, 1, 3 }, 1 },    // asymmetric padding, non-square
        { 1, 30, 9, 9, 64, 3, 1, new[] { 4, 5, 4, 5 }, 1 },      // padding wider than the kernel's reach: rows and columns of zeros only
        { 1, 30, 11, 12, 64, 3, 1, new[] { 2, 2, 2, 2 }, 2 },    // dilation 2
        { 1, 30, 12, 11, 64, 3, 2, new[] { 3, 1, 0, 2 }, 2 },    // stride 2 with dilation and asymmetric padding
        { 1, 8, 1, 1, 40, 3, 1, new[] { 1, 1, 1, 1 }, 1 },       // a 1x1 input: one real tap per output (the GEMM path)
        { 1, 8, 5, 1, 8, 3, 2, new[] { 1, 0, 1, 2 }, 1 },        // a 1-wide input at stride 2
        { 1, 10, 20, 29, 6, 5, 2, new[] { 2, 2, 2, 2 }, 1 },     // few channels: the GEMM path, odd width at stride 2
        { 5, 12, 8, 8, 40, 3, 1, new[] { 1, 1, 1, 1 }, 1 },      // a batch folded into shared GEMMs
        { 3, 40, 10, 10, 70, 1, 2, new[] { 0, 0, 0, 0 }, 1 },    // 1x1 stride 2 (ResNet's downsampling), batch 3
        { 1, 8, 240, 32, 40, 3, 1, new[] { 1, 1, 1, 1 }, 1 },    // 7680 positions from K = 72: blocks of output rows, im2col from row y0 > 0
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MaskedRowsMatchTheScalarRowsAndTheReference(int n, int c, int h, int w, int o, int k, int stride, int[] pad, int dil)
    {
        var gen = new Generator(21);
        var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        var weight = Tensor.Randn([o, c, k, k], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var conv = new PackedConv2d(weight, bias, (stride, stride), (pad[0], pad[1], pad[2], pad[3]), (dil, dil), 1, FusedActivation.None);
        var reference = ConvReference.Conv(Functional.Pad(x, [pad[1], pad[3], pad[0], pad[2]]), weight, bias, (stride, stride), (0, 0), (dil, dil));
        var other = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        // The im2col scratch is reused between calls: fill it from another input first, so that an element the masked rows
        // failed to write shows up as a wrong output instead of a stale right one, then with NaN (the calling thread's
        // scratch), so that a padding zero left out shows up too.
        ConvReference.SameBitsAcrossSwitch(conv, x, reference, v => PackedConv2d.UseMaskedIm2Col = v,
            on: System.Runtime.Intrinsics.X86.Avx512F.IsSupported, restore: PackedConv2d.UseMaskedIm2Col,
            between: () => { conv.Run(other); PackedConv2d.PoisonScratch(); });
    }
}
