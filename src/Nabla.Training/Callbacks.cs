using System.Globalization;

namespace Nabla.Training;

/// <summary>Hooks into the Trainer's loop (Lightning's Callback). State returned by <see cref="StateDict"/> is checkpointed.</summary>
public abstract class Callback
{
    public virtual string Key => GetType().Name;
    public virtual void OnFitStart(Trainer trainer, LightningModule module) { }
    public virtual void OnTrainEpochStart(Trainer trainer, LightningModule module) { }
    public virtual void OnTrainBatchEnd(Trainer trainer, LightningModule module, double loss, int batchIndex) { }
    public virtual void OnTrainEpochEnd(Trainer trainer, LightningModule module) { }
    public virtual void OnValidationEnd(Trainer trainer, LightningModule module) { }
    /// <summary>After the epoch (training and validation) is complete and its metrics are known.</summary>
    public virtual void OnEpochEnd(Trainer trainer, LightningModule module) { }
    public virtual void OnFitEnd(Trainer trainer, LightningModule module) { }
    public virtual Dictionary<string, double> StateDict() => new();
    public virtual void LoadStateDict(Dictionary<string, double> state) { }
}

/// <summary>User hooks as delegates.</summary>
public sealed class LambdaCallback : Callback
{
    public Action<Trainer, LightningModule>? FitStart { get; init; }
    public Action<Trainer, LightningModule>? EpochEnd { get; init; }
    public Action<Trainer, LightningModule, double, int>? TrainBatchEnd { get; init; }
    public Action<Trainer, LightningModule>? FitEnd { get; init; }
    public override string Key => "LambdaCallback" + GetHashCode().ToString(CultureInfo.InvariantCulture);
    public override void OnFitStart(Trainer t, LightningModule m) => FitStart?.Invoke(t, m);
    public override void OnEpochEnd(Trainer t, LightningModule m) => EpochEnd?.Invoke(t, m);
    public override void OnTrainBatchEnd(Trainer t, LightningModule m, double loss, int i) => TrainBatchEnd?.Invoke(t, m, loss, i);
    public override void OnFitEnd(Trainer t, LightningModule m) => FitEnd?.Invoke(t, m);
}

/// <summary>
/// Saves "best.safetensors" whenever the monitored metric improves and "last.safetensors" after every epoch
/// (when <see cref="SaveLast"/>). Without a monitor only the last checkpoint is kept.
/// </summary>
public sealed class ModelCheckpoint : Callback
{
    public string Directory { get; }
    public string? Monitor { get; }
    public string Mode { get; }
    public bool SaveLast { get; }
    public double BestScore { get; private set; }
    public string? BestPath { get; private set; }
    public string LastPath => Path.Combine(Directory, "last.safetensors");

    public ModelCheckpoint(string directory, string? monitor = "val_loss", string mode = "min", bool saveLast = true)
    {
        if (mode is not ("min" or "max")) throw new NablaException($"ModelCheckpoint: mode must be 'min' or 'max', got '{mode}'");
        Directory = directory;
        Monitor = monitor;
        Mode = mode;
        SaveLast = saveLast;
        BestScore = mode == "min" ? double.PositiveInfinity : double.NegativeInfinity;
    }

    public override void OnEpochEnd(Trainer trainer, LightningModule module)
    {
        if (Monitor is not null)
        {
            if (!trainer.CallbackMetrics.TryGetValue(Monitor, out var v))
                throw new NablaException($"ModelCheckpoint: monitored metric '{Monitor}' was not logged; available: {string.Join(", ", trainer.CallbackMetrics.Keys)}");
            if (Mode == "min" ? v < BestScore : v > BestScore)
            {
                BestScore = v;
                BestPath = Path.Combine(Directory, "best.safetensors");
                trainer.SaveCheckpoint(BestPath);
            }
        }
        if (SaveLast || Monitor is null) trainer.SaveCheckpoint(LastPath);
    }

    public override Dictionary<string, double> StateDict() => new() { ["best_score"] = BestScore };
    public override void LoadStateDict(Dictionary<string, double> s)
    {
        BestScore = s["best_score"];
        if (File.Exists(Path.Combine(Directory, "best.safetensors"))) BestPath = Path.Combine(Directory, "best.safetensors");
    }
}

/// <summary>Stops training when the monitored metric has not improved by minDelta for patience epochs.</summary>
public sealed class EarlyStopping : Callback
{
    readonly string monitor, mode;
    readonly int patience;
    readonly double minDelta;
    double best;
    int wait;
    public int StoppedEpoch { get; private set; } = -1;

    public EarlyStopping(string monitor = "val_loss", int patience = 3, string mode = "min", double minDelta = 0)
    {
        (this.monitor, this.patience, this.mode, this.minDelta) = (monitor, patience, mode, Math.Abs(minDelta));
        best = mode == "min" ? double.PositiveInfinity : double.NegativeInfinity;
    }

    public override void OnEpochEnd(Trainer trainer, LightningModule module)
    {
        if (!trainer.CallbackMetrics.TryGetValue(monitor, out var v))
            throw new NablaException($"EarlyStopping: monitored metric '{monitor}' was not logged; available: {string.Join(", ", trainer.CallbackMetrics.Keys)}");
        bool improved = mode == "min" ? v < best - minDelta : v > best + minDelta;
        if (improved) { best = v; wait = 0; }
        else if (++wait >= patience)
        {
            StoppedEpoch = trainer.CurrentEpoch;
            trainer.ShouldStop = true;
        }
    }

    public override Dictionary<string, double> StateDict() => new() { ["best"] = best, ["wait"] = wait };
    public override void LoadStateDict(Dictionary<string, double> s) { best = s["best"]; wait = (int)s["wait"]; }
}

/// <summary>Logs each parameter group's learning rate as "lr-group{i}" at every epoch end (or every step).</summary>
public sealed class LearningRateMonitor : Callback
{
    readonly bool everyStep;
    public LearningRateMonitor(string loggingInterval = "epoch") => everyStep = loggingInterval == "step";

    void Log(Trainer t)
    {
        if (t.Optimizer is null) return;
        var m = new Dictionary<string, double>();
        for (int i = 0; i < t.Optimizer.ParamGroups.Count; i++) m[$"lr-group{i}"] = t.Optimizer.ParamGroups[i].Lr;
        t.LogToLoggers(m);
    }

    public override void OnTrainBatchEnd(Trainer t, LightningModule m, double loss, int i) { if (everyStep) Log(t); }
    public override void OnTrainEpochStart(Trainer t, LightningModule m) { if (!everyStep) Log(t); }
}
