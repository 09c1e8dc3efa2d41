using Nabla.Data;
using Nabla.NN;
using Nabla.Optim;

namespace Nabla.Training.Tests;

/// <summary>A tiny three-class problem (Gaussian blobs in 2-D) and small models for Trainer tests.</summary>
public static class Tiny
{
    static readonly (float x, float y)[] Centers = [(2f, 0f), (-1f, 1.7f), (-1f, -1.7f)];

    /// <summary>n samples: inputs [n, 2], labels int64 [n], from a private generator (not the default one).</summary>
    public static TensorDataset Blobs(int n, ulong seed, double spread = 0.6)
    {
        var g = new Generator(seed);
        var x = new float[n * 2];
        var y = new long[n];
        for (int i = 0; i < n; i++)
        {
            int c = i % 3;
            y[i] = c;
            x[2 * i] = Centers[c].x + (float)(spread * g.NextNormal());
            x[2 * i + 1] = Centers[c].y + (float)(spread * g.NextNormal());
        }
        return new TensorDataset(Tensor.FromArray(x, n, 2), Tensor.FromArray(y));
    }

    public static Func<IEnumerable<Tensor>, OptimizerConfig> Sgd(double lr, double momentum = 0) => ps => new OptimizerConfig(new SGD(ps, lr, momentum: momentum));

    public static Func<IEnumerable<Tensor>, OptimizerConfig> AdamWithStepLR(double lr) => ps =>
    {
        var opt = new Adam(ps, lr);
        return new OptimizerConfig(opt, new StepLR(opt, 1, 0.7));
    };

    /// <summary>2 → 16 → 3 MLP; its initial weights come from the default generator seeded with <paramref name="seed"/>.</summary>
    public static ClassificationTask Mlp(ulong seed, Func<IEnumerable<Tensor>, OptimizerConfig> optimizer, bool dropout = false, string? architecture = null,
        Func<Module>? makeNet = null)
    {
        Tensor.ManualSeed(seed);
        var net = makeNet is not null ? makeNet() : dropout
            ? new Sequential(new Linear(2, 16), new ReLU(), new Dropout(0.2), new Linear(16, 3))
            : new Sequential(new Linear(2, 16), new ReLU(), new Linear(16, 3));
        return new ClassificationTask(net, optimizer, architecture);
    }

    public static DataLoader<Batch, Batch> TrainLoader(int n = 192, int batch = 16, ulong seed = 7) =>
        DataLoader.Create(Blobs(n, 1), batch, shuffle: true, seed: seed);

    public static DataLoader<Batch, Batch> ValLoader(int n = 96) => DataLoader.Create(Blobs(n, 2), 32);

    public static TrainerOptions Options(int epochs) => new() { MaxEpochs = epochs, EnableProgressBar = false };

    public static Dictionary<string, float[]> Weights(Module m) =>
        m.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Contiguous().ToArray<float>());

    public static void AssertBitIdentical(Dictionary<string, float[]> a, Dictionary<string, float[]> b)
    {
        Xunit.Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var k in a.Keys)
        {
            var x = a[k].Select(BitConverter.SingleToInt32Bits).ToArray();
            var y = b[k].Select(BitConverter.SingleToInt32Bits).ToArray();
            Xunit.Assert.True(x.SequenceEqual(y), $"tensor {k} differs");
        }
    }
}
