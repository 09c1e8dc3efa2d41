using Nabla.Data;
using Nabla.NN;
using Nabla.Optim;

namespace Nabla.Training;

public enum SchedulerInterval { Epoch, Step }

/// <summary>What <see cref="LightningModule.ConfigureOptimizers"/> returns: an optimizer and an optional schedule.</summary>
public sealed record OptimizerConfig(Optimizer Optimizer, LRScheduler? Scheduler = null, SchedulerInterval Interval = SchedulerInterval.Epoch,
    ReduceLROnPlateau? Plateau = null, string Monitor = "val_loss");

/// <summary>
/// A model plus its training logic, in the shape of PyTorch Lightning's LightningModule: the Trainer calls
/// the step methods and owns the loop; <see cref="Log"/> records metrics that the Trainer averages over the epoch.
/// </summary>
public abstract class LightningModule : Module
{
    internal MetricLog? CurrentLog;

    /// <summary>Returns the loss to minimize for one batch.</summary>
    public abstract Tensor TrainingStep(Batch batch, int batchIndex);

    public virtual void ValidationStep(Batch batch, int batchIndex) { }

    public virtual void TestStep(Batch batch, int batchIndex) => ValidationStep(batch, batchIndex);

    public virtual Tensor PredictStep(Batch batch, int batchIndex) => Forward(batch.Input);

    public abstract OptimizerConfig ConfigureOptimizers();

    /// <summary>The architecture recorded in checkpoints and checked on resume (default: the class name).</summary>
    public virtual string ArchitectureName => GetType().Name;

    /// <summary>Records a scalar; values logged in one epoch are averaged, weighted by <paramref name="batchSize"/>.</summary>
    protected void Log(string name, double value, int batchSize = 1, bool progressBar = true)
    {
        if (CurrentLog is null) throw new NablaException($"log: '{name}' was logged outside a Trainer step");
        CurrentLog.Add(name, value, batchSize, progressBar);
    }

    /// <summary>Records an epoch-level metric object (computed by the Trainer at the end of the epoch).</summary>
    protected void Log(string name, Metric metric, bool progressBar = true)
    {
        if (CurrentLog is null) throw new NablaException($"log: '{name}' was logged outside a Trainer step");
        CurrentLog.AddMetric(name, metric, progressBar);
    }
}

/// <summary>Averages of the values logged during one stage of an epoch.</summary>
internal sealed class MetricLog
{
    readonly Dictionary<string, (double sum, double weight)> sums = new();
    readonly Dictionary<string, Metric> metrics = new();
    public readonly HashSet<string> ProgressBar = new();
    public readonly Dictionary<string, double> Last = new();

    public void Add(string name, double value, int weight, bool bar)
    {
        sums[name] = sums.TryGetValue(name, out var s) ? (s.sum + value * weight, s.weight + weight) : (value * weight, weight);
        Last[name] = value;
        if (bar) ProgressBar.Add(name);
    }

    public void AddMetric(string name, Metric m, bool bar)
    {
        metrics[name] = m;
        if (bar) ProgressBar.Add(name);
    }

    public Dictionary<string, double> Epoch()
    {
        var r = sums.ToDictionary(kv => kv.Key, kv => kv.Value.sum / Math.Max(kv.Value.weight, 1e-12));
        foreach (var (k, m) in metrics) r[k] = m.Compute();
        return r;
    }

    public void Reset()
    {
        sums.Clear();
        Last.Clear();
        foreach (var m in metrics.Values) m.Reset();
    }
}

/// <summary>
/// A ready-made classifier task: cross-entropy on a network's logits, with accuracy, and an optimizer chosen by name.
/// The CLI and the quickstart use it.
/// </summary>
public sealed class ClassificationTask : LightningModule
{
    public Module Net { get; }
    readonly Func<IEnumerable<Tensor>, OptimizerConfig> optimizers;
    readonly Accuracy trainAcc = new(), valAcc = new();

    readonly string? architecture;

    /// <param name="architecture">the name checkpoints record (e.g. "mlp"); default the network's class name, which
    /// cannot tell apart two different <see cref="Sequential"/> models.</param>
    public ClassificationTask(Module net, Func<IEnumerable<Tensor>, OptimizerConfig> optimizers, string? architecture = null)
    {
        Net = RegisterModule("net", net);
        this.optimizers = optimizers;
        this.architecture = architecture;
    }

    public override string ArchitectureName => architecture ?? Net.GetType().Name;

    public override Tensor Forward(Tensor input) => Net.Forward(input);

    public override Tensor TrainingStep(Batch batch, int batchIndex)
    {
        var logits = Net.Forward(batch.Input);
        var loss = Losses.CrossEntropy(logits, batch.Target);
        int n = batch.Target.Size(0);
        Log("train_loss", loss.Item(), n);
        trainAcc.Update(logits.Detach(), batch.Target);
        Log("train_acc", trainAcc);
        return loss;
    }

    public override void ValidationStep(Batch batch, int batchIndex)
    {
        var logits = Net.Forward(batch.Input);
        var loss = Losses.CrossEntropy(logits, batch.Target);
        Log("val_loss", loss.Item(), batch.Target.Size(0));
        valAcc.Update(logits, batch.Target);
        Log("val_acc", valAcc);
    }

    public override OptimizerConfig ConfigureOptimizers() => optimizers(Net.Parameters());
}
