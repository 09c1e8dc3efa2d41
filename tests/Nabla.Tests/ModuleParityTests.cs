using System.Globalization;
using System.Text.Json;
using Nabla.IO;
using Nabla.NN;
using Xunit;

namespace Nabla.Tests;

/// <summary>
/// Reads the module fixtures of tools/fixtures/make_module_fixtures.py (torch 1.13): loads PyTorch's state dict
/// into the Nabla module, runs the same forward pass in float32 and compares outputs and the gradients of
/// sum_k (out_k · g_k).sum() by inputs and parameters against PyTorch's float64 values.
/// </summary>
static class ModuleFixture
{
    public const double Rtol = 1e-4, Atol = 1e-5;

    static string Dir => Path.Combine(AppContext.BaseDirectory, "fixtures", "modules");

    public static (Dictionary<string, Tensor> Tensors, JsonElement Config) Load(string name)
    {
        var (t, meta) = SafeTensors.LoadWithMetadata(Path.Combine(Dir, name + ".safetensors"));
        var config = meta.TryGetValue("config", out var c) ? JsonDocument.Parse(c).RootElement.Clone() : default;
        return (t, config);
    }

    public static JsonElement Layouts()
    {
        var (_, meta) = SafeTensors.LoadWithMetadata(Path.Combine(Dir, "layouts.safetensors"));
        return JsonDocument.Parse(meta["layouts"]).RootElement.Clone();
    }

    /// <summary>
    /// Loads state.* into <paramref name="module"/>, gives <paramref name="run"/> the inputs (float ones requiring grad)
    /// and checks every output, input gradient and parameter gradient the fixture holds.
    /// </summary>
    public static void Check(string name, Module module, Func<Dictionary<string, Tensor>, Dictionary<string, Tensor?>> run, bool train = false)
    {
        var (t, _) = Load(name);
        var state = t.Where(kv => kv.Key.StartsWith("state.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key["state.".Length..], kv => kv.Value);
        module.LoadStateDict(state);
        module.Train(train);
        module.ZeroGrad();
        var inputs = new Dictionary<string, Tensor>();
        foreach (var (k, v) in t.Where(kv => kv.Key.StartsWith("in.", StringComparison.Ordinal)))
        {
            var x = v.Clone();
            if (x.DType.IsFloatingPoint()) x.RequiresGrad = true;
            inputs[k["in.".Length..]] = x;
        }
        var outs = run(inputs);
        Tensor? loss = null;
        foreach (var (k, expected) in t.Where(kv => kv.Key.StartsWith("out.", StringComparison.Ordinal)))
        {
            string on = k["out.".Length..];
            Assert.True(outs.TryGetValue(on, out var actual) && actual is not null, $"{name}: Nabla gave no output '{on}'");
            AssertClose($"{name} output {on}", expected, actual!);
            var term = actual!.Mul(t["g." + on]).Sum();
            loss = loss is null ? term : loss.Add(term);
        }
        Assert.NotNull(loss);
        loss!.Backward();
        foreach (var (k, expected) in t.Where(kv => kv.Key.StartsWith("grad.in.", StringComparison.Ordinal)))
        {
            var x = inputs[k["grad.in.".Length..]];
            AssertClose($"{name} grad of input {k["grad.in.".Length..]}", expected, x.Grad ?? Tensor.ZerosLike(x));
        }
        var ps = module.NamedParameters().ToDictionary(p => p.name, p => p.parameter);
        int count = 0;
        foreach (var (k, expected) in t.Where(kv => kv.Key.StartsWith("grad.state.", StringComparison.Ordinal)))
        {
            string pn = k["grad.state.".Length..];
            Assert.True(ps.TryGetValue(pn, out var p), $"{name}: Nabla module has no parameter '{pn}'");
            AssertClose($"{name} grad of parameter {pn}", expected, p!.Grad ?? Tensor.ZerosLike(p));
            count++;
        }
        Assert.Equal(ps.Count, count);
    }

    public static void AssertClose(string what, Tensor expected, Tensor actual, double rtol = Rtol, double atol = Atol) =>
        TensorAssert.Close(what, expected, actual, rtol, atol);
}

/// <summary>State dict names, shapes and default initialization of the layers, against PyTorch's.</summary>
public sealed class ModuleParityTests
{
    static Module Small(string name) => name switch
    {
        "Linear" => new Linear(5, 3),
        "LinearNoBias" => new Linear(5, 3, bias: false),
        "Conv1d" => new Conv1d(4, 6, 3),
        "Conv2d" => new Conv2d(3, 8, 3),
        "Conv2dGroups" => new Conv2d(4, 8, 3, groups: 2),
        "ConvTranspose2d" => new ConvTranspose2d(4, 6, 3),
        "BatchNorm1d" => new BatchNorm1d(5),
        "BatchNorm2d" => new BatchNorm2d(5),
        "LayerNorm" => new LayerNorm(7),
        "GroupNorm" => new GroupNorm(2, 6),
        "Embedding" => new Embedding(10, 4),
        "LSTM" => new LSTM(5, 4, numLayers: 2, bidirectional: true),
        "GRU" => new GRU(5, 4, bias: false),
        "MultiheadAttention" => new MultiheadAttention(8, 2),
        "TransformerEncoderLayer" => new TransformerEncoderLayer(8, 2, dimFeedforward: 16),
        _ => throw new ArgumentException(name),
    };

    static Module Large(string name) => name switch
    {
        "Linear" => new Linear(400, 300),
        "Conv1d" => new Conv1d(40, 64, 5),
        "Conv2d" => new Conv2d(32, 64, 3),
        "ConvTranspose2d" => new ConvTranspose2d(64, 32, 3),
        "Embedding" => new Embedding(1000, 64),
        "LSTM" => new LSTM(64, 100),
        "GRU" => new GRU(64, 100),
        "MultiheadAttention" => new MultiheadAttention(128, 4),
        _ => throw new ArgumentException(name),
    };

    public static IEnumerable<object[]> ModuleNames() =>
        ModuleFixture.Layouts().EnumerateObject().Select(p => new object[] { p.Name });

    [Theory]
    [MemberData(nameof(ModuleNames))]
    public void StateDictKeysAndShapesMatchPyTorch(string module)
    {
        var entry = ModuleFixture.Layouts().GetProperty(module);
        var expected = entry.GetProperty("keys").EnumerateArray()
            .Select(kv => kv[0].GetString() + " " + ShapeUtil.Format(kv[1].EnumerateArray().Select(d => d.GetInt32()).ToArray())).ToList();
        var actual = Small(module).StateDict().Select(kv => kv.Key + " " + ShapeUtil.Format(kv.Value.Shape)).ToList();
        Assert.Equal(expected, actual);
    }

    [Theory]
    [MemberData(nameof(ModuleNames))]
    public void DefaultInitStatisticsMatchPyTorch(string module)
    {
        var entry = ModuleFixture.Layouts().GetProperty(module);
        if (!entry.TryGetProperty("init", out var init)) return;
        var sd = Large(module).StateDict();
        foreach (var p in init.EnumerateObject())
        {
            var s = p.Value.EnumerateArray().Select(x => x.GetDouble()).ToArray();
            double tMin = s[0], tMax = s[1], tMean = s[2], tStd = s[3];
            Assert.True(sd.TryGetValue(p.Name, out var t), $"{module}: no state '{p.Name}'");
            var v = t!.ToDoubleArray();
            double mean = v.Average(), std = Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / Math.Max(1, v.Length - 1));
            double min = v.Min(), max = v.Max();
            string what = $"{module}.{p.Name}: Nabla min/max/mean/std {min:G4}/{max:G4}/{mean:G4}/{std:G4}, PyTorch {tMin:G4}/{tMax:G4}/{tMean:G4}/{tStd:G4}";
            if (tStd == 0)
            {
                Assert.True(min == tMin && max == tMax, what);
                continue;
            }
            double n = v.Length;
            Assert.True(Math.Abs(std - tStd) <= tStd * (0.02 + 6 / Math.Sqrt(n)), what);
            Assert.True(Math.Abs(mean - tMean) <= 8 * tStd / Math.Sqrt(n), what);
            Assert.True(Math.Abs(min - tMin) <= 0.12 * (tMax - tMin) && Math.Abs(max - tMax) <= 0.12 * (tMax - tMin), what);
        }
    }

    [Fact]
    public void LinearDefaultInitStaysWithinBound()
    {
        var lin = new Linear(50, 40);
        double bound = 1 / Math.Sqrt(50);
        Assert.All(lin.Weight.ToDoubleArray(), w => Assert.InRange(w, -bound, bound));
        Assert.All(lin.Bias!.ToDoubleArray(), b => Assert.InRange(b, -bound, bound));
        var emb = new Embedding(500, 32).Weight.ToDoubleArray();
        double mean = emb.Average(), std = Math.Sqrt(emb.Sum(x => (x - mean) * (x - mean)) / emb.Length);
        Assert.InRange(mean, -0.03, 0.03);
        Assert.InRange(std, 0.97, 1.03);
    }

    [Fact]
    public void UniformInitGivesTheValuesOfRandMulAdd()
    {
        // Float32 takes a one-pass fill (no generic Mul and Add at start-up); it must give bit for bit what the three-op
        // form gives from the same stream, into a contiguous tensor and into a strided view.
        // Bounds that float cannot hold exactly (±1/√3, as Kaiming gives for fan-in 9), so each rounding step shows.
        double bound = 1 / Math.Sqrt(3);
        var expected = Tensor.Rand([70, 90], DType.Float32, new Generator(42)).Mul(bound - -bound).Add(-bound).ToArray<float>();
        var t = Tensor.Zeros(70, 90);
        Assert.Same(t, Init.Uniform(t, -bound, bound, new Generator(42)));
        Assert.Equal(expected, t.ToArray<float>());

        var wide = Tensor.Zeros(90, 70);
        Init.Uniform(wide.T, -bound, bound, new Generator(42));
        Assert.Equal(expected, wide.T.ToArray<float>());

        // Other dtypes keep the three-op form.
        var expected64 = Tensor.Rand([5, 3], DType.Float64, new Generator(7)).Mul(2.0).Add(1.0).ToArray<double>();
        var d = Tensor.Zeros([5, 3], DType.Float64);
        Init.Uniform(d, 1, 3, new Generator(7));
        Assert.Equal(expected64, d.ToArray<double>());
    }

    [Fact]
    public void RegisteringANameTwiceThrowsForEveryKindOfAttribute()
    {
        var m = new Registrar();
        m.Add("weight", parameter: true);
        m.Add("running", buffer: true);
        m.Add("child");
        foreach (var name in new[] { "weight", "running", "child" })
        {
            Assert.Throws<NablaException>(() => m.Add(name, parameter: true));
            Assert.Throws<NablaException>(() => m.Add(name, buffer: true));
            Assert.Throws<NablaException>(() => m.Add(name));
        }
        Assert.Equal(["weight", "running"], m.StateDict().Keys);
        Assert.Equal(["", "child"], m.NamedModules().Select(x => x.name));
    }

    sealed class Registrar : Module
    {
        public void Add(string name, bool parameter = false, bool buffer = false)
        {
            if (parameter) RegisterParameter(name, Tensor.Zeros(2));
            else if (buffer) RegisterBuffer(name, Tensor.Zeros(2));
            else RegisterModule(name, new Registrar());
        }
    }

    [Fact]
    public void LoadStateDictRejectsPyTorchShapesOfAnotherConfig()
    {
        var (t, _) = ModuleFixture.Load("lstm_2layer_bidir_batchfirst");
        var state = t.Where(kv => kv.Key.StartsWith("state.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key["state.".Length..], kv => kv.Value);
        Assert.Throws<ModelFormatException>(() => new LSTM(5, 4, numLayers: 1, bidirectional: true).LoadStateDict(state));
        Assert.Throws<ModelFormatException>(() => new LSTM(5, 3, numLayers: 2, bidirectional: true).LoadStateDict(state));
    }
}
