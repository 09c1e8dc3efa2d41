using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The Winograd F(2×2, 3×3) path of <see cref="PackedConv2d"/> (3×3, stride 1, padding 1, at least
/// <see cref="PackedConv2d.WinogradMinInChannels"/> input channels, maps of at least <see cref="PackedConv2d.WinogradMinSide"/>)
/// against the float64 eager convolution (<see cref="ConvReference"/>) and against the paths it replaces. It changes <see cref="Gemm.Threads"/>
/// and <see cref="PackedConv2d.UseWinograd"/>, so it runs in the GEMM settings collection.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceWinogradTests
{
    // n, c, h, w, o
    public static TheoryData<int, int, int, int, int> Cases() => new()
    {
        { 1, 64, 14, 14, 33 },    // the smallest that takes the path (32 output channels or fewer run directly)
        { 1, 64, 15, 17, 36 },    // odd sides: the last tile row and column reach past the map
        { 1, 64, 31, 29, 33 },    // odd sides with bands of tile rows per thread (4·O ≤ tile positions)
        { 2, 64, 16, 14, 70 },    // batch 2 (images split over threads)
        { 1, 70, 20, 18, 130 },   // 130 output channels: more than one row block of the packed filters
        { 1, 300, 14, 14, 40 },   // 300 input channels: the filters' K crosses a GEMM K block
        { 1, 64, 56, 56, 40 },    // long rows: the vector column split and interleave
        { 1, 64, 70, 60, 32 },    // 4200 positions: past the narrow direct kernel's limit, so 32 channels take this path
        { 1, 300, 30, 31, 40 },   // F(4×4, 3×3) with a K block crossed and odd sides
        { 2, 64, 28, 29, 36 },    // F(4×4, 3×3) at its smallest map, batch 2
        { 1, 64, 30, 101, 34 },   // F(4×4, 3×3) on rows of more than 64 positions: two blocks per residue row, a ragged end
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void WinogradMatchesEagerConvAndTheOtherPaths(int n, int c, int h, int w, int o)
    {
        var gen = new Generator(13);
        var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        var weight = Tensor.Randn([o, c, 3, 3], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var reference = ConvReference.Conv(x, weight, bias, (1, 1), (1, 1));
        var residual = Tensor.Randn(reference.Shape, DType.Float32, gen);
        bool bands = PackedConv2d.WinogradBands, f4 = PackedConv2d.WinogradF4, row4 = Cpu.UseRow4, panels = PackedConv2d.WinogradPanels, use512 = Gemm.Use512;
        try
        {
            // With several threads: bands of tile rows per thread, and the three stages each split over the threads; on maps
            // of 28 and more, F(4×4, 3×3) and F(2×2, 3×3), the former's rows split into residues and merged back in one
            // AVX-512 pass or in two 2-way passes, and V written in the GEMM's micro-panels (32 wide, or 16 for the 256-bit
            // kernel) or row-major.
            // A constant weight builds the filters from its own array, and the GEMM path's packed copy on first use.
            foreach (bool large in new[] { false, true })
            foreach (bool oneStep in large ? new[] { true, false } : new[] { row4 })
            foreach (bool inPanels in large ? new[] { true, false } : new[] { panels })
            foreach (bool wide in large && inPanels && use512 ? new[] { true, false } : new[] { use512 })
            foreach (bool banded in new[] { true, false })
            foreach (bool constant in new[] { false, true })
            {
                Cpu.UseRow4 = oneStep && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
                PackedConv2d.WinogradPanels = inPanels;
                Gemm.Use512 = wide;
                PackedConv2d.WinogradF4 = large;
                PackedConv2d.WinogradBands = banded;
                var conv = new PackedConv2d(weight, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.Relu, constantWeight: constant);
                // F(4×4, 3×3)'s transforms (coefficients up to 8 and 1/24) cost about a decimal digit: errors up to 1.8e-4 on
                // these outputs of order 1, whose sums before the activation spread over ±5 to ±10 (64 to 300 channels).
                double tol = large && Math.Min(h, w) >= PackedConv2d.WinogradF4MinSide ? 5e-4 : 1e-4;
                // Winograd works on the packed filters, which exist only on the FMA path: elsewhere the path must stay off.
                ConvReference.CheckPath(conv, x, reference, residual, v => PackedConv2d.UseWinograd = v, on: Gemm.UseFastPath,
                    restore: PackedConv2d.UseWinograd, () => conv.HasWinogradFilters, tol);
            }
        }
        finally
        {
            PackedConv2d.WinogradBands = bands;
            PackedConv2d.WinogradF4 = f4;
            Cpu.UseRow4 = row4;
            PackedConv2d.WinogradPanels = panels;
            Gemm.Use512 = use512;
        }
    }

    [Fact]
    public void OtherShapesKeepTheirPaths()
    {
        var gen = new Generator(4);
        // Too few input channels (twice; 56 → 32 runs directly), too few output channels, a small map, stride 2, padding 0,
        // dilation 2: none builds the transformed filters.
        var cases = new (int c, int o, int side, int stride, int pad, int dil)[]
        {
            (32, 64, 16, 1, 1, 1), (64, 16, 16, 1, 1, 1), (56, 32, 16, 1, 1, 1), (64, 40, 13, 1, 1, 1), (64, 40, 16, 2, 1, 1), (64, 40, 16, 1, 0, 1), (64, 40, 16, 1, 1, 2),
        };
        foreach (var (c, o, side, stride, pad, dil) in cases)
        {
            var w = Tensor.Randn([o, c, 3, 3], DType.Float32, gen).Mul(0.2);
            var conv = new PackedConv2d(w, null, (stride, stride), (pad, pad, pad, pad), (dil, dil), 1, FusedActivation.None);
            var x = Tensor.Randn([1, c, side, side], DType.Float32, gen);
            ConvReference.Close(ConvReference.Conv(x, w, null, (stride, stride), (pad, pad), (dil, dil)), conv.Run(x));
            Assert.False(conv.HasWinogradFilters, $"c={c} o={o} side={side} stride={stride} pad={pad} dilation={dil}");
        }
    }
}
