using Nabla.Data;
using Nabla.NN;
using Nabla.Optim;
using Xunit;

namespace Nabla.Training.Tests;

public class TrainerTests
{
    [Fact]
    public void FitReducesLossAndLearns()
    {
        var task = Tiny.Mlp(1, Tiny.Sgd(0.1, 0.9));
        var trainer = new Trainer(Tiny.Options(5));
        trainer.Fit(task, Tiny.TrainLoader(), Tiny.ValLoader());
        Assert.Equal(5, trainer.History.Count);
        Assert.True(trainer.History[^1]["train_loss"] < 0.6 * trainer.History[0]["train_loss"],
            $"train loss {trainer.History[0]["train_loss"]} -> {trainer.History[^1]["train_loss"]}");
        Assert.True(trainer.History[^1]["val_loss"] < trainer.History[0]["val_loss"]);
        Assert.True(trainer.CallbackMetrics["val_acc"] > 0.9, $"val_acc {trainer.CallbackMetrics["val_acc"]}");
    }

    [Fact]
    public void MaxEpochsIsRespected()
    {
        var trainer = new Trainer(Tiny.Options(3));
        trainer.Fit(Tiny.Mlp(1, Tiny.Sgd(0.05)), Tiny.TrainLoader());
        Assert.Equal(3, trainer.CurrentEpoch);
        Assert.Equal(3, trainer.History.Count);
        Assert.Equal(3 * 12, trainer.GlobalStep);
        Assert.Equal([0.0, 1, 2], trainer.History.Select(h => h["epoch"]));
    }

    [Theory]
    [InlineData(5, 1)]
    [InlineData(12, 1)]
    [InlineData(15, 2)]
    public void MaxStepsIsRespected(int maxSteps, int epochs)
    {
        int batches = 0;
        var trainer = new Trainer(Tiny.Options(10) with
        {
            MaxSteps = maxSteps,
            Callbacks = [new LambdaCallback { TrainBatchEnd = (_, _, _, _) => batches++ }],
        });
        trainer.Fit(Tiny.Mlp(1, Tiny.Sgd(0.05)), Tiny.TrainLoader());
        Assert.Equal(maxSteps, trainer.GlobalStep);
        Assert.Equal(maxSteps, batches);
        Assert.Equal(epochs, trainer.History.Count);
    }

    [Fact]
    public void LimitTrainBatchesAndStepsWithAccumulation()
    {
        var trainer = new Trainer(Tiny.Options(2) with { LimitTrainBatches = 5, AccumulateGradBatches = 2 });
        trainer.Fit(Tiny.Mlp(1, Tiny.Sgd(0.05)), Tiny.TrainLoader());
        // 5 batches per epoch, accumulated in pairs: steps after batches 2, 4 and (the remainder) 5.
        Assert.Equal(6, trainer.GlobalStep);
    }

    [Fact]
    public void ValidationMetricsAppear()
    {
        var trainer = new Trainer(Tiny.Options(2));
        trainer.Fit(Tiny.Mlp(1, Tiny.Sgd(0.05)), Tiny.TrainLoader(), Tiny.ValLoader());
        foreach (var h in trainer.History)
        {
            foreach (var k in new[] { "train_loss", "train_acc", "val_loss", "val_acc", "epoch" }) Assert.True(h.ContainsKey(k), $"missing {k}");
            Assert.InRange(h["val_acc"], 0, 1);
            Assert.True(h["val_loss"] > 0);
        }
    }

    [Fact]
    public void ValidateMatchesTheLastEpochsValidation()
    {
        var task = Tiny.Mlp(1, Tiny.Sgd(0.05));
        var trainer = new Trainer(Tiny.Options(2));
        trainer.Fit(task, Tiny.TrainLoader(), Tiny.ValLoader());
        var m = trainer.Validate(task, Tiny.ValLoader());
        Assert.Equal(trainer.History[^1]["val_loss"], m["val_loss"], 12);
        Assert.Equal(trainer.History[^1]["val_acc"], m["val_acc"], 12);
    }

    [Fact]
    public void EpochMetricsCoverOnlyThatEpoch()
    {
        // Overlapping classes, so accuracy moves between epochs; each epoch's val_acc must equal a fresh evaluation
        // of that epoch's weights (metric objects must not accumulate across validations).
        var train = DataLoader.Create(Tiny.Blobs(96, 1, spread: 1.6), 16, shuffle: true, seed: 3);
        var val = DataLoader.Create(Tiny.Blobs(90, 2, spread: 1.6), 30);
        var fresh = new List<(double acc, double loss)>();
        var logged = new List<double>();
        var probe = new LambdaCallback
        {
            EpochEnd = (t, m) =>
            {
                var copy = Tiny.Mlp(1, Tiny.Sgd(0.0));
                copy.LoadStateDict(m.StateDict());
                var r = new Trainer(Tiny.Options(1)).Validate(copy, val);
                fresh.Add((r["val_acc"], r["val_loss"]));
                logged.Add(t.CallbackMetrics["val_acc"]);
            },
        };
        var task = Tiny.Mlp(1, Tiny.Sgd(0.3, 0.9));
        var trainer = new Trainer(Tiny.Options(4) with { Callbacks = [probe] });
        trainer.Fit(task, train, val);
        Assert.Equal(fresh.Select(f => f.acc), logged);
        Assert.Equal(fresh.Select(f => f.acc), trainer.History.Select(h => h["val_acc"]));
        Assert.True(fresh.Select(f => f.acc).Distinct().Count() > 1, "accuracy did not change; the test proves nothing");
        // Test after Fit reports the final weights only.
        Assert.Equal(fresh[^1].acc, trainer.Test(task, val)["val_acc"]);
        Assert.All(trainer.History, h => Assert.InRange(h["train_acc"], 0, 1));
    }

    [Fact]
    public void EarlyStoppingStops()
    {
        // With a zero learning rate the validation loss never improves after the first epoch.
        var stop = new EarlyStopping("val_loss", patience: 2);
        var trainer = new Trainer(Tiny.Options(20) with { Callbacks = [stop] });
        trainer.Fit(Tiny.Mlp(1, Tiny.Sgd(0.0)), Tiny.TrainLoader(), Tiny.ValLoader());
        Assert.Equal(3, trainer.History.Count);
        Assert.Equal(3, stop.StoppedEpoch);
        Assert.True(trainer.ShouldStop);
    }

    [Fact]
    public void EarlyStoppingOnAMissingMetricNamesIt()
    {
        var trainer = new Trainer(Tiny.Options(2) with { Callbacks = [new EarlyStopping("val_f1")] });
        var e = Assert.Throws<NablaException>(() => trainer.Fit(Tiny.Mlp(1, Tiny.Sgd(0.05)), Tiny.TrainLoader(), Tiny.ValLoader()));
        Assert.Contains("val_f1", e.Message);
        Assert.Contains("val_loss", e.Message);
    }

    [Fact]
    public void ModelCheckpointWritesBestAndLast()
    {
        using var tmp = new TempDir();
        var ckpt = new ModelCheckpoint(tmp["ckpt"], monitor: "val_loss", mode: "min");
        var task = Tiny.Mlp(1, Tiny.Sgd(0.1, 0.9));
        var trainer = new Trainer(Tiny.Options(4) with { Callbacks = [ckpt] });
        trainer.Fit(task, Tiny.TrainLoader(), Tiny.ValLoader());
        Assert.True(File.Exists(ckpt.LastPath));
        Assert.Equal(Path.Combine(tmp["ckpt"], "best.safetensors"), ckpt.BestPath);
        Assert.True(File.Exists(ckpt.BestPath));
        int bestEpoch = Enumerable.Range(0, 4).MinBy(e => trainer.History[e]["val_loss"]);
        Assert.Equal(trainer.History[bestEpoch]["val_loss"], ckpt.BestScore);

        var (lastWeights, lastOpt, lastState) = Checkpoint.Load(ckpt.LastPath);
        Assert.Equal(4, lastState.Epoch);
        Assert.Equal(trainer.GlobalStep, lastState.GlobalStep);
        Assert.NotNull(lastOpt); // SGD with momentum has state
        Assert.Equal(Tiny.Weights(task).Keys.Select(k => "net." + k.Split('.', 2)[1]).Order(), lastWeights.Keys.Order());
        Tiny.AssertBitIdentical(Tiny.Weights(task), lastWeights.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>()));
        var (_, _, bestState) = Checkpoint.Load(ckpt.BestPath!);
        Assert.Equal(bestEpoch + 1, bestState.Epoch);
        Assert.Equal(trainer.History[bestEpoch]["val_loss"], bestState.Metrics["val_loss"]);
        // Only the two checkpoints, no temporary files left behind.
        Assert.Equal(["best.safetensors", "last.safetensors"], Directory.GetFiles(tmp["ckpt"]).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void ModelCheckpointOnAMissingMetricNamesIt()
    {
        using var tmp = new TempDir();
        var trainer = new Trainer(Tiny.Options(1) with { Callbacks = [new ModelCheckpoint(tmp.Path, monitor: "val_loss")] });
        var e = Assert.Throws<NablaException>(() => trainer.Fit(Tiny.Mlp(1, Tiny.Sgd(0.05)), Tiny.TrainLoader()));
        Assert.Contains("val_loss", e.Message);
    }

    [Fact]
    public void GradientAccumulationOfTwoHalvesEqualsOneFullBatch()
    {
        var data = Tiny.Blobs(32, 5);
        Dictionary<string, float[]> Run(int batch, int accumulate, out long steps)
        {
            var task = Tiny.Mlp(3, Tiny.Sgd(0.5));
            var trainer = new Trainer(Tiny.Options(1) with { AccumulateGradBatches = accumulate });
            trainer.Fit(task, DataLoader.Create(data, batch, prefetch: 0));
            steps = trainer.GlobalStep;
            return Tiny.Weights(task);
        }
        var full = Run(32, 1, out var s1);
        var accumulated = Run(16, 2, out var s2);
        var twoSteps = Run(16, 1, out var s3);
        Assert.Equal(1, s1);
        Assert.Equal(1, s2);
        Assert.Equal(2, s3);
        var init = Tiny.Weights(Tiny.Mlp(3, Tiny.Sgd(0.5)));
        foreach (var k in full.Keys)
        {
            Assert.False(full[k].SequenceEqual(init[k]), $"{k} did not change");
            for (int i = 0; i < full[k].Length; i++) Assert.Equal(full[k][i], accumulated[k][i], 1e-6f);
        }
        Assert.Contains(full.Keys, k => full[k].Zip(twoSteps[k]).Any(p => Math.Abs(p.First - p.Second) > 1e-4));
    }

    /// <summary>loss = Σ w ⊙ c, so the gradient of w is exactly c.</summary>
    sealed class LinearProbe : LightningModule
    {
        public Tensor W { get; }
        readonly Tensor c;
        public LinearProbe(float[] c)
        {
            W = RegisterParameter("w", Tensor.Zeros(c.Length));
            this.c = Tensor.FromArray(c);
        }
        public override Tensor TrainingStep(Batch batch, int batchIndex) => W.Mul(c).Sum();
        public override OptimizerConfig ConfigureOptimizers() => new(new SGD(Parameters(), 1.0));
    }

    static float[] OneStep(LinearProbe m, TrainerOptions o)
    {
        var one = new TensorDataset(Tensor.Zeros(1, 1), Tensor.FromArray(new long[] { 0 }));
        new Trainer(o with { MaxEpochs = 1, EnableProgressBar = false }).Fit(m, DataLoader.Create(one, 1, prefetch: 0));
        return m.W.ToArray<float>();
    }

    [Fact]
    public void GradientClippingByNorm()
    {
        var w = OneStep(new LinearProbe([30, -40, 0, 0]), new TrainerOptions { GradientClipVal = 5, GradientClipAlgorithm = "norm" });
        Assert.Equal(-3f, w[0], 1e-4f);
        Assert.Equal(4f, w[1], 1e-4f);
        Assert.Equal(5.0, Math.Sqrt(w.Sum(v => (double)v * v)), 1e-4);
        // Below the threshold nothing changes.
        var small = OneStep(new LinearProbe([0.3f, -0.4f, 0, 0]), new TrainerOptions { GradientClipVal = 5 });
        Assert.Equal([-0.3f, 0.4f, 0, 0], small);
    }

    [Fact]
    public void GradientClippingByValue()
    {
        var w = OneStep(new LinearProbe([30, -40, 0.5f, 0]), new TrainerOptions { GradientClipVal = 1, GradientClipAlgorithm = "value" });
        Assert.Equal([-1f, 1f, -0.5f, 0f], w);
        var none = OneStep(new LinearProbe([30, -40, 0.5f, 0]), new TrainerOptions());
        Assert.Equal([-30f, 40f, -0.5f, 0f], none);
        Assert.Throws<NablaException>(() => new Trainer(new TrainerOptions { GradientClipAlgorithm = "max" }));
        Assert.Throws<NablaException>(() => new Trainer(new TrainerOptions { AccumulateGradBatches = 0 }));
    }

    [Fact]
    public void TestAndPredict()
    {
        var task = Tiny.Mlp(1, Tiny.Sgd(0.1, 0.9));
        var trainer = new Trainer(Tiny.Options(3));
        trainer.Fit(task, Tiny.TrainLoader());
        var test = trainer.Test(task, Tiny.ValLoader(96));
        Assert.True(test["val_acc"] > 0.9, $"test accuracy {test["val_acc"]}");
        Assert.True(test["val_loss"] < 0.5);
        var preds = trainer.Predict(task, Tiny.ValLoader(96));
        Assert.Equal(3, preds.Count);
        Assert.All(preds, p => Assert.Equal([32, 3], p.Shape));
        Assert.False(preds[0].RequiresGrad);
        // Predictions agree with the test accuracy.
        var labels = Tiny.ValLoader(96).SelectMany(b => b.Target.ToArray<long>()).ToArray();
        var argmax = preds.SelectMany(p => p.Argmax(1).ToArray<long>()).ToArray();
        Assert.Equal(test["val_acc"], labels.Zip(argmax).Count(p => p.First == p.Second) / 96.0, 12);
        Assert.False(task.Training);
    }

    [Fact]
    public void SeedsGiveBitIdenticalRuns()
    {
        (Dictionary<string, float[]> w, List<Dictionary<string, double>> h) Run(ulong seed)
        {
            var task = Tiny.Mlp(seed, Tiny.AdamWithStepLR(0.01), dropout: true);
            var trainer = new Trainer(Tiny.Options(2) with { Seed = seed });
            trainer.Fit(task, Tiny.TrainLoader(seed: seed), Tiny.ValLoader());
            return (Tiny.Weights(task), trainer.History);
        }
        var a = Run(11);
        var b = Run(11);
        var c = Run(12);
        Tiny.AssertBitIdentical(a.w, b.w);
        Assert.Equal(a.h.Select(x => x["val_loss"]), b.h.Select(x => x["val_loss"]));
        Assert.NotEqual(a.w["net.0.weight"], c.w["net.0.weight"]);
    }

    static (Trainer trainer, ClassificationTask task, ModelCheckpoint ckpt) ResumableRun(string dir, int epochs, string? resumeFrom = null)
    {
        // Everything is built from scratch the same way, as a new process would.
        var task = Tiny.Mlp(21, Tiny.AdamWithStepLR(0.02), dropout: true);
        var ckpt = new ModelCheckpoint(dir, monitor: "val_loss");
        var trainer = new Trainer(Tiny.Options(epochs) with { Seed = 21, Callbacks = [ckpt, new EarlyStopping("val_loss", patience: 100)] });
        trainer.Fit(task, Tiny.TrainLoader(seed: 99), Tiny.ValLoader(), resumeFrom);
        return (trainer, task, ckpt);
    }

    [Fact]
    public void ResumeGivesBitIdenticalWeights()
    {
        using var tmp = new TempDir();
        var (full, fullTask, _) = ResumableRun(tmp["a"], 4);
        var (first, _, firstCkpt) = ResumableRun(tmp["b"], 2);
        Assert.Equal(2, first.CurrentEpoch);
        var (resumed, resumedTask, resumedCkpt) = ResumableRun(tmp["b"], 4, firstCkpt.LastPath);
        Assert.Equal(4, resumed.CurrentEpoch);
        Assert.Equal(full.GlobalStep, resumed.GlobalStep);
        Assert.Equal(2, resumed.History.Count);
        Tiny.AssertBitIdentical(Tiny.Weights(fullTask), Tiny.Weights(resumedTask));
        Assert.Equal(full.History.Skip(2).Select(h => h["val_loss"]), resumed.History.Select(h => h["val_loss"]));
        Assert.Equal(full.History.Skip(2).Select(h => h["train_loss"]), resumed.History.Select(h => h["train_loss"]));
        Assert.Equal(full.Optimizer!.ParamGroups[0].Lr, resumed.Optimizer!.ParamGroups[0].Lr);
        // The best score carried over, so "best" is the best of all four epochs.
        Assert.Equal(full.History.Min(h => h["val_loss"]), resumedCkpt.BestScore);
    }

    [Fact]
    public void FailedSaveLeavesThePreviousCheckpointLoadable()
    {
        using var tmp = new TempDir();
        var dir = tmp["ckpt"];
        var task = Tiny.Mlp(1, Tiny.Sgd(0.1, 0.9));
        var trainer = new Trainer(Tiny.Options(1) with { Callbacks = [new ModelCheckpoint(dir, monitor: null)] });
        trainer.Fit(task, Tiny.TrainLoader());
        var path = Path.Combine(dir, "last.safetensors");
        var saved = Tiny.Weights(task);
        var bytes = File.ReadAllBytes(path);
        // Change the weights so that a successful save would change the file.
        using (GradMode.NoGrad()) foreach (var p in task.Parameters()) p.Copy_(p.Add(1.0));

        // 1. The directory refuses new files (immutable for root, read-only otherwise): the temporary file cannot be written.
        if (BlockWrites(dir))
        {
            try
            {
                Assert.ThrowsAny<Exception>(() => trainer.SaveCheckpoint(path));
            }
            finally { UnblockWrites(dir); }
            Assert.Equal(bytes, File.ReadAllBytes(path));
        }

        // 2. A component of the state fails while the checkpoint is being assembled.
        var bad = new Trainer(Tiny.Options(1) with { Callbacks = [new ThrowingStateCallback(path)] });
        var e = Assert.Throws<InvalidOperationException>(() => bad.Fit(task, Tiny.TrainLoader()));
        Assert.Contains("state is unavailable", e.Message);
        Assert.Equal(bytes, File.ReadAllBytes(path));

        var (w, _, state) = Checkpoint.Load(path);
        Assert.Equal(1, state.Epoch);
        Tiny.AssertBitIdentical(saved, w.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>()));
        Assert.Equal(["last.safetensors"], Directory.GetFiles(dir).Select(Path.GetFileName));
    }

    /// <summary>Saves into last.safetensors at the end of the epoch, but its own state cannot be serialized.</summary>
    sealed class ThrowingStateCallback(string path) : Callback
    {
        public override void OnEpochEnd(Trainer trainer, LightningModule module) => trainer.SaveCheckpoint(path);
        public override Dictionary<string, double> StateDict() => throw new InvalidOperationException("the callback's state is unavailable");
    }

    static bool BlockWrites(string dir)
    {
        if (OperatingSystem.IsWindows()) return false;
        bool root = Environment.UserName == "root";
        if (root)
        {
            if (!RunTool("chattr", "+i", dir)) return false;
        }
        else File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        // Check that writes really are refused here (some file systems ignore both).
        try
        {
            File.WriteAllText(Path.Combine(dir, "probe"), "x");
            File.Delete(Path.Combine(dir, "probe"));
            UnblockWrites(dir);
            return false;
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException) { return true; }
    }

    static void UnblockWrites(string dir)
    {
        if (OperatingSystem.IsWindows()) return;
        if (Environment.UserName == "root") RunTool("chattr", "-i", dir);
        else File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    static bool RunTool(string tool, params string[] args)
    {
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo(tool) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in args) psi.ArgumentList.Add(a);
            using var p = System.Diagnostics.Process.Start(psi)!;
            p.WaitForExit(10_000);
            return p.HasExited && p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }

    [Fact]
    public void CheckpointFromAnotherArchitectureNamesBoth()
    {
        using var tmp = new TempDir();
        var ckpt = new ModelCheckpoint(tmp.Path, monitor: null);
        new Trainer(Tiny.Options(1) with { Callbacks = [ckpt] }).Fit(Tiny.Mlp(1, Tiny.Sgd(0.05)), Tiny.TrainLoader());
        Assert.Equal("Sequential", Checkpoint.Load(ckpt.LastPath).state.Architecture);

        // A different network class.
        Tensor.ManualSeed(1);
        var linear = new ClassificationTask(new Linear(2, 3), Tiny.Sgd(0.05));
        var e = Assert.Throws<ModelFormatException>(() => new Trainer(Tiny.Options(2)).Fit(linear, Tiny.TrainLoader(), ckptPath: ckpt.LastPath));
        Assert.Contains("'Sequential'", e.Message);
        Assert.Contains("'Linear'", e.Message);
        Assert.Contains(ckpt.LastPath, e.Message);

        // Two Sequential models told apart by their names.
        using var tmp2 = new TempDir();
        var named = new ModelCheckpoint(tmp2.Path, monitor: null);
        new Trainer(Tiny.Options(1) with { Callbacks = [named] }).Fit(Tiny.Mlp(1, Tiny.Sgd(0.05), architecture: "mlp-16"), Tiny.TrainLoader());
        var other = Tiny.Mlp(1, Tiny.Sgd(0.05), architecture: "mlp-wide");
        var e2 = Assert.Throws<ModelFormatException>(() => new Trainer(Tiny.Options(2)).Fit(other, Tiny.TrainLoader(), ckptPath: named.LastPath));
        Assert.Contains("'mlp-16'", e2.Message);
        Assert.Contains("'mlp-wide'", e2.Message);
    }

    [Fact]
    public void CorruptCheckpointsAreModelFormatErrors()
    {
        using var tmp = new TempDir();
        Assert.Contains("not found", Assert.Throws<ModelFormatException>(() => Checkpoint.Load(tmp["none.safetensors"])).Message);
        // Plain safetensors weights without training state.
        Nabla.IO.SafeTensors.Save(tmp["w.safetensors"], new Dictionary<string, Tensor> { ["a"] = Tensor.Zeros(2) });
        var e = Assert.Throws<ModelFormatException>(() => Checkpoint.Load(tmp["w.safetensors"]));
        Assert.Contains(tmp["w.safetensors"], e.Message);
        Assert.Contains("nabla.checkpoint", e.Message);
        // Corrupt JSON state.
        Nabla.IO.SafeTensors.Save(tmp["j.safetensors"], new Dictionary<string, Tensor> { ["model.a"] = Tensor.Zeros(2) },
            new Dictionary<string, string> { ["nabla.checkpoint"] = "{\"epoch\": \"x\"" });
        var j = Assert.Throws<ModelFormatException>(() => Checkpoint.Load(tmp["j.safetensors"]));
        Assert.Contains("corrupt", j.Message);
    }
}

public class RecycleStepMemoryTests
{
    // Wide enough that activations (48 × 512 floats), a weight (64 × 512) and its gradient and Adam state are recyclable.
    static ClassificationTask WideMlp() =>
        Tiny.Mlp(3, ps => new OptimizerConfig(new Adam(ps, 1e-2)), makeNet: () => new Sequential(new Linear(2, 64), new ReLU(), new Linear(64, 512), new ReLU(), new Linear(512, 3)));

    /// <summary>A fit whose batches run in dispose scopes must be the same fit, weight for weight, as one without.</summary>
    [Fact]
    public void RecyclingStepsChangesNothingButTheBuffers()
    {
        Dictionary<string, float[]> Fit(bool recycle, out Trainer trainer)
        {
            var task = WideMlp();
            trainer = new Trainer(Tiny.Options(2) with { RecycleStepMemory = recycle, AccumulateGradBatches = 2 });
            trainer.Fit(task, Tiny.TrainLoader(batch: 48), DataLoader.Create(Tiny.Blobs(96, 2), 48));
            return Tiny.Weights(task);
        }
        var plain = Fit(false, out var t1);
        long hits = StorageCache.Hits;
        var recycled = Fit(true, out var t2);
        Assert.True(StorageCache.Hits - hits >= 8, $"only {StorageCache.Hits - hits} allocations came from the cache");
        Tiny.AssertBitIdentical(plain, recycled);
        Assert.Equal(t1.History.Select(h => h["train_loss"]), t2.History.Select(h => h["train_loss"]));
        Assert.Equal(t1.History.Select(h => h["val_loss"]), t2.History.Select(h => h["val_loss"]));
    }
}
