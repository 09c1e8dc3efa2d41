using Xunit;

namespace Nabla.Tests;

/// <summary>
/// <see cref="PackedConv2d"/>'s two ways of holding a weight: copied into its packed layout at construction (the caller may
/// change the tensor afterwards), or, with <c>constantWeight</c>, read from the tensor's own array whenever a layout is
/// first needed (a model's initializers: no second copy). Runs in the GEMM settings collection because it switches
/// <see cref="PackedConv2d.UseWinograd"/> and <see cref="PackedConv2d.UseChannelTiles"/>.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceConstantWeightTests
{
    static (Tensor X, Tensor Weight, Tensor Reference) Layer()
    {
        var gen = new Generator(17);
        var x = Tensor.Randn([1, 64, 14, 14], DType.Float32, gen);
        // 64·64·9 floats, 147 KB: large enough to be recycled when its tensors are disposed.
        var weight = Tensor.Randn([64, 64, 3, 3], DType.Float32, gen).Mul(0.1);
        return (x, weight, ConvReference.Conv(x, weight, null, (1, 1), (1, 1)));
    }

    [Fact]
    public void AConstantWeightIsReadWhereItLiesAndOutlivesItsTensor()
    {
        var (x, weight, reference) = Layer();
        Assert.True(weight.Storage.Length * sizeof(float) >= StorageCache.MinBytes);
        bool saved = PackedConv2d.UseWinograd, tiles = PackedConv2d.UseChannelTiles;
        try
        {
            PackedConv2d.UseWinograd = true;
            var conv = new PackedConv2d(weight, null, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.None, constantWeight: true);
            ConvReference.Close(reference, conv.Run(x));
            // On the FMA path this layer runs Winograd, whose filters come from the weight itself: no packed GEMM copy.
            Assert.Equal(Gemm.UseFastPath, conv.HasWinogradFilters);
            Assert.False(conv.HasPackedWeights);
            // Disposing the tensor must not hand its array to the next allocation of the same size while the layer holds it.
            weight.Dispose();
            using var other = Tensor.Full([64, 64, 3, 3], 7f);
            PackedConv2d.UseWinograd = false;   // the GEMM path now packs its copy, from the array the tensor had
            PackedConv2d.UseChannelTiles = false;
            ConvReference.Close(reference, conv.Run(x));
            Assert.Equal(Gemm.UseFastPath, conv.HasPackedWeights);
        }
        finally
        {
            PackedConv2d.UseWinograd = saved;
            PackedConv2d.UseChannelTiles = tiles;
        }
    }

    [Fact]
    public void AWeightThatMayChangeIsCopiedAtConstruction()
    {
        var (x, weight, reference) = Layer();
        bool saved = PackedConv2d.UseWinograd;
        try
        {
            var conv = new PackedConv2d(weight, null, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.None);
            weight.Mul_(0);   // the layouts built below on first use must come from the copy, not from the changed tensor
            foreach (bool winograd in new[] { true, false })
            {
                PackedConv2d.UseWinograd = winograd;   // Winograd, then the channel tiles: layouts built after the write
                ConvReference.Close(reference, conv.Run(x));
            }
        }
        finally { PackedConv2d.UseWinograd = saved; }
    }
}
