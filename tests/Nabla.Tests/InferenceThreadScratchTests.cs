using Xunit;

namespace Nabla.Tests;

/// <summary>
/// Threaded convolution paths at batch 1: those whose threads each build their own copy of the input in per-thread scratch
/// (padded planes for the direct kernel, im2col columns for the channel tiles) and the im2col + GEMM path (one im2col
/// buffer shared by the threads). Calls with different inputs in turn, every other one with a residual, at two and three
/// threads on the worker pool and inline inside a pool body, must each give the bits one thread gives for that input, so
/// a thread that reused its scratch from the previous call, or built the wrong rows, fails. Changes
/// <see cref="Gemm.Threads"/>, so it runs in the GEMM settings collection.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceThreadScratchTests
{
    // c, h, w, o, k, stride, pad
    public static TheoryData<int, int, int, int, int, int, int> Cases() => new()
    {
        { 3, 60, 60, 32, 7, 2, 3 },    // direct at stride 2 (four channel groups split over the threads)
        { 8, 14, 14, 16, 5, 1, 2 },    // direct at stride 1 (mnist-8's second layer: two groups)
        { 40, 15, 15, 100, 3, 2, 1 },  // channel tiles, the output rows split
        { 32, 6, 6, 130, 3, 1, 1 },    // channel tiles, the channel blocks split (each thread builds the whole im2col)
        { 64, 56, 56, 128, 1, 2, 0 },  // im2col + GEMM (ResNet's first 1×1 stride-2 downsampling): the GEMM splits the columns
        { 16, 31, 29, 64, 3, 1, 1 },   // im2col + GEMM (K = 144 is below the channel tiles' 192), 899 columns
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EachCallSeesItsOwnInputAtTwoThreads(int c, int h, int w, int o, int k, int stride, int pad)
    {
        var gen = new Generator(17);
        var weight = Tensor.Randn([o, c, k, k], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var conv = new PackedConv2d(weight, bias, (stride, stride), (pad, pad, pad, pad), (1, 1), 1, FusedActivation.Relu);
        var inputs = Enumerable.Range(0, 3).Select(_ => Tensor.Randn([1, c, h, w], DType.Float32, gen)).ToArray();
        int saved = Gemm.Threads;
        try
        {
            Gemm.Threads = 1;
            var residual = Tensor.Randn(conv.OutputShape(inputs[0].Shape), DType.Float32, gen);
            // Even rounds without a residual, odd rounds with one (the epilogue adds it before the activation).
            var expected = inputs.Select(x => conv.Run(x).ToArray<float>()).ToArray();
            var expectedRes = inputs.Select(x => conv.Run(x, residual).ToArray<float>()).ToArray();
            ConvReference.Close(ConvReference.Conv(inputs[0], weight, bias, (stride, stride), (pad, pad)).Relu(), conv.Run(inputs[0]));
            bool tiles = c >= 32 && k == 3 && o >= 100;   // cases 3 and 4 take the channel tiles
            Assert.Equal(tiles && System.Runtime.Intrinsics.X86.Avx512F.IsSupported, conv.HasChannelPanels);
            using var scope = WorkerPool.Scope();
            foreach (int threads in new[] { 2, 3 })
            {
                Gemm.Threads = threads;
                long jobs = WorkerPool.JobCount;
                for (int round = 0; round < 12; round++)
                {
                    int i = round % inputs.Length;
                    var y = Tensor.Full(conv.OutputShape(inputs[i].Shape), float.NaN);
                    conv.Run(inputs[i], round % 2 == 1 ? residual : null, y);
                    Assert.Equal(round % 2 == 1 ? expectedRes[i] : expected[i], y.ToArray<float>());
                }
                if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported) Assert.True(WorkerPool.JobCount > jobs, "the calls did not go to the pool");
                // From inside a pool body the split runs inline: every part on this thread, one after the other (a part that
                // finds this call's whole-image columns or planes already built reuses them).
                for (int round = 0; round < 6; round++)
                {
                    int i = round % inputs.Length;
                    var y = Tensor.Full(conv.OutputShape(inputs[i].Shape), float.NaN);
                    var r = round % 2 == 1 ? residual : null;
                    WorkerPool.For(2, 2, q => { if (q == 0) conv.Run(inputs[i], r, y); });
                    Assert.Equal(r is null ? expected[i] : expectedRes[i], y.ToArray<float>());
                }
            }
        }
        finally
        {
            Gemm.Threads = saved;
        }
    }
}
