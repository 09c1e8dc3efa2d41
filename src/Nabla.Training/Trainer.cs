using System.Diagnostics;
using Nabla.Data;
using Nabla.Optim;

namespace Nabla.Training;

/// <summary>Options of a <see cref="Trainer"/>, named after Lightning's arguments.</summary>
public sealed record TrainerOptions
{
    public int MaxEpochs { get; init; } = 10;
    /// <summary>Stop after this many optimizer steps (-1: no limit).</summary>
    public long MaxSteps { get; init; } = -1;
    public int CheckValEveryNEpoch { get; init; } = 1;
    /// <summary>Also validate every N training batches within an epoch (0: only at epoch ends).</summary>
    public int ValCheckIntervalBatches { get; init; }
    public int? LimitTrainBatches { get; init; }
    public int? LimitValBatches { get; init; }
    public int AccumulateGradBatches { get; init; } = 1;
    public double? GradientClipVal { get; init; }
    /// <summary>"norm" (clip the joint 2-norm) or "value" (clamp each element).</summary>
    public string GradientClipAlgorithm { get; init; } = "norm";
    /// <summary>Seeds the default generator; loaders own their generators and are seeded at construction.</summary>
    public ulong? Seed { get; init; }
    public bool EnableProgressBar { get; init; } = true;
    public TextWriter? Output { get; init; }
    public List<Callback> Callbacks { get; init; } = new();
    public List<ITrainingLogger> Loggers { get; init; } = new();
    /// <summary>
    /// Runs each training and evaluation batch in a <see cref="DisposeScope"/>, so the next batch reuses its activations'
    /// large buffers instead of the GC freeing them. Off by default: a LightningModule that keeps a tensor made in a step
    /// (an output saved for an epoch-end hook) must then move it out with <see cref="Tensor.MoveToOuterDisposeScope"/>
    /// or copy what it needs, as with TorchSharp's dispose scopes. Parameters, gradients and optimizer state are safe.
    /// </summary>
    public bool RecycleStepMemory { get; init; }
}

/// <summary>
/// The training loop with Lightning's ergonomics: <see cref="Fit"/>, <see cref="Validate"/>, <see cref="Test"/>,
/// <see cref="Predict"/>; callbacks, loggers, gradient accumulation and clipping, and exact resume from a checkpoint.
/// </summary>
public sealed class Trainer
{
    public TrainerOptions Options { get; }
    public int CurrentEpoch { get; private set; }
    public long GlobalStep { get; private set; }
    public bool ShouldStop { get; set; }
    /// <summary>The latest epoch-level metrics (train and validation), as callbacks see them.</summary>
    public Dictionary<string, double> CallbackMetrics { get; } = new();
    public Optimizer? Optimizer { get; private set; }
    public List<Dictionary<string, double>> History { get; } = new();

    LightningModule? module;
    OptimizerConfig? config;
    DataLoader<Batch, Batch>? trainLoader;
    readonly ProgressReporter? progress;

    public Trainer(TrainerOptions? options = null)
    {
        Options = options ?? new TrainerOptions();
        if (Options.AccumulateGradBatches < 1) throw new NablaException($"Trainer: accumulate_grad_batches must be at least 1, got {Options.AccumulateGradBatches}");
        if (Options.GradientClipAlgorithm is not ("norm" or "value"))
            throw new NablaException($"Trainer: gradient_clip_algorithm must be 'norm' or 'value', got '{Options.GradientClipAlgorithm}'");
        if (Options.EnableProgressBar) progress = new ProgressReporter(Options.Output);
    }

    TextWriter Out => Options.Output ?? Console.Out;

    internal void LogToLoggers(IReadOnlyDictionary<string, double> metrics)
    {
        foreach (var l in Options.Loggers) l.LogMetrics(metrics, GlobalStep);
    }

    /// <summary>Trains <paramref name="model"/>; when <paramref name="ckptPath"/> is given, resumes from that checkpoint.</summary>
    public void Fit(LightningModule model, DataLoader<Batch, Batch> train, DataLoader<Batch, Batch>? val = null, string? ckptPath = null)
    {
        module = model;
        trainLoader = train;
        if (Options.Seed is ulong seed) Generator.Default.ManualSeed(seed);
        config = model.ConfigureOptimizers();
        Optimizer = config.Optimizer;
        CurrentEpoch = 0;
        GlobalStep = 0;
        ShouldStop = false;
        if (ckptPath is not null) Restore(ckptPath);
        foreach (var c in Options.Callbacks) c.OnFitStart(this, model);

        var trainLog = new MetricLog();
        while (CurrentEpoch < Options.MaxEpochs && !ShouldStop && !StepsDone)
        {
            model.Train();
            trainLog.Reset();
            progress?.EpochStart();
            foreach (var c in Options.Callbacks) c.OnTrainEpochStart(this, model);
            int batches = Options.LimitTrainBatches is int lt ? Math.Min(lt, train.Count) : train.Count;
            int bi = 0;
            Optimizer.ZeroGrad();
            foreach (var batch in train)
            {
                if (bi >= batches || StepsDone) break;
                using var stepScope = Options.RecycleStepMemory ? Tensor.NewDisposeScope() : null;
                model.CurrentLog = trainLog;
                var loss = model.TrainingStep(batch, bi);
                model.CurrentLog = null;
                double lossValue = loss.Item();
                if (!double.IsFinite(lossValue))
                    throw new NablaException($"Trainer: the training loss became {lossValue} at epoch {CurrentEpoch}, batch {bi}");
                (Options.AccumulateGradBatches > 1 ? loss.Div(Options.AccumulateGradBatches) : loss).Backward();
                bool stepNow = (bi + 1) % Options.AccumulateGradBatches == 0 || bi + 1 == batches;
                if (stepNow)
                {
                    ClipGradients(model);
                    Optimizer.Step();
                    Optimizer.ZeroGrad();
                    GlobalStep++;
                    if (config.Scheduler is not null && config.Interval == SchedulerInterval.Step) config.Scheduler.Step();
                    var stepMetrics = trainLog.Last.Where(kv => trainLog.ProgressBar.Contains(kv.Key)).ToDictionary(kv => kv.Key + "_step", kv => kv.Value);
                    if (GlobalStep % 50 == 0) LogToLoggers(stepMetrics);
                }
                foreach (var c in Options.Callbacks) c.OnTrainBatchEnd(this, model, lossValue, bi);
                progress?.Batch(CurrentEpoch, Options.MaxEpochs, bi, batches, batch.Target.Size(0),
                    trainLog.Last.Where(kv => trainLog.ProgressBar.Contains(kv.Key)).ToDictionary());
                bi++;
                if (val is not null && Options.ValCheckIntervalBatches > 0 && bi % Options.ValCheckIntervalBatches == 0 && bi < batches)
                {
                    RunValidation(model, val);
                    model.Train();
                }
            }
            var epochMetrics = trainLog.Epoch();
            trainLog.Reset();
            foreach (var (k, v) in epochMetrics) CallbackMetrics[k] = v;
            foreach (var c in Options.Callbacks) c.OnTrainEpochEnd(this, model);
            if (val is not null && (CurrentEpoch + 1) % Options.CheckValEveryNEpoch == 0) RunValidation(model, val);
            if (config.Scheduler is not null && config.Interval == SchedulerInterval.Epoch) config.Scheduler.Step();
            if (config.Plateau is not null && CallbackMetrics.TryGetValue(config.Monitor, out var monitored)) config.Plateau.Step(monitored);
            var summary = new Dictionary<string, double>(CallbackMetrics) { ["epoch"] = CurrentEpoch };
            History.Add(summary);
            LogToLoggers(summary);
            progress?.EpochEnd(CurrentEpoch, Options.MaxEpochs, CallbackMetrics);
            CurrentEpoch++;
            // NOTE: epoch-end callbacks (checkpoints) run after the counter advances, so a checkpoint records
            // the next epoch to run and resuming from it continues exactly where this run continues.
            foreach (var c in Options.Callbacks) c.OnEpochEnd(this, model);
        }
        foreach (var l in Options.Loggers) l.Finish();
        foreach (var c in Options.Callbacks) c.OnFitEnd(this, model);
    }

    bool StepsDone => Options.MaxSteps >= 0 && GlobalStep >= Options.MaxSteps;

    void ClipGradients(LightningModule model)
    {
        if (Options.GradientClipVal is not double clip) return;
        if (Options.GradientClipAlgorithm == "norm") GradClip.ClipGradNorm(model.Parameters(), clip);
        else GradClip.ClipGradValue(model.Parameters(), clip);
    }

    void RunValidation(LightningModule model, DataLoader<Batch, Batch> val)
    {
        var m = Evaluate(model, val, Options.LimitValBatches, test: false);
        foreach (var (k, v) in m) CallbackMetrics[k] = v;
        foreach (var c in Options.Callbacks) c.OnValidationEnd(this, model);
    }

    Dictionary<string, double> Evaluate(LightningModule model, DataLoader<Batch, Batch> loader, int? limit, bool test)
    {
        model.Eval();
        var log = new MetricLog();
        int bi = 0;
        using (GradMode.NoGrad())
        {
            foreach (var batch in loader)
            {
                if (limit is int l && bi >= l) break;
                using var stepScope = Options.RecycleStepMemory ? Tensor.NewDisposeScope() : null;
                model.CurrentLog = log;
                if (test) model.TestStep(batch, bi);
                else model.ValidationStep(batch, bi);
                model.CurrentLog = null;
                bi++;
            }
        }
        var result = log.Epoch();
        // NOTE: metric objects (Accuracy...) live in the module across runs; reset them so the next
        // validation starts from zero instead of averaging over every validation so far.
        log.Reset();
        return result;
    }

    /// <summary>Runs the validation loop once and returns its metrics.</summary>
    public Dictionary<string, double> Validate(LightningModule model, DataLoader<Batch, Batch> loader) => Evaluate(model, loader, Options.LimitValBatches, test: false);

    /// <summary>Runs the test loop once and returns its metrics (names as logged by TestStep).</summary>
    public Dictionary<string, double> Test(LightningModule model, DataLoader<Batch, Batch> loader) => Evaluate(model, loader, null, test: true);

    /// <summary>Returns PredictStep's output for every batch, in order.</summary>
    public List<Tensor> Predict(LightningModule model, DataLoader<Batch, Batch> loader)
    {
        model.Eval();
        var outs = new List<Tensor>();
        using (GradMode.NoGrad())
        {
            int bi = 0;
            foreach (var b in loader) outs.Add(model.PredictStep(b, bi++));
        }
        return outs;
    }

    /// <summary>Writes a checkpoint of the current fit: model, optimizer, scheduler, counters, RNG and callback state.</summary>
    public void SaveCheckpoint(string path)
    {
        if (module is null) throw new NablaException("save_checkpoint: no fit is running");
        var state = new TrainingState
        {
            Epoch = CurrentEpoch,
            GlobalStep = GlobalStep,
            Architecture = ArchitectureName(module),
            Metrics = new Dictionary<string, double>(CallbackMetrics),
            Rng = { ["default"] = Generator.Default.GetState() },
            Scheduler = config?.Scheduler?.StateDict(),
            Plateau = config?.Plateau?.StateDict(),
        };
        if (trainLoader is not null) state.Rng["train_loader"] = trainLoader.Generator.GetState();
        foreach (var c in Options.Callbacks) state.Callbacks[c.Key] = c.StateDict();
        Checkpoint.Save(path, module, Optimizer, state);
    }

    static string ArchitectureName(LightningModule m) => m.ArchitectureName;

    void Restore(string path)
    {
        var (weights, opt, state) = Checkpoint.Load(path);
        var arch = ArchitectureName(module!);
        if (state.Architecture.Length > 0 && state.Architecture != arch)
            throw new ModelFormatException($"checkpoint: {path} was written for architecture '{state.Architecture}', but the model is '{arch}'");
        module!.LoadStateDict(weights);
        if (opt is not null) Optimizer!.LoadStateDict(opt);
        if (state.Scheduler is not null) config!.Scheduler?.LoadStateDict(state.Scheduler);
        if (state.Plateau is not null) config!.Plateau?.LoadStateDict(state.Plateau);
        if (state.Rng.TryGetValue("default", out var d)) Generator.Default.SetState(d);
        if (state.Rng.TryGetValue("train_loader", out var tl)) trainLoader!.Generator.SetState(tl);
        foreach (var c in Options.Callbacks)
            if (state.Callbacks.TryGetValue(c.Key, out var cs)) c.LoadStateDict(cs);
        foreach (var (k, v) in state.Metrics) CallbackMetrics[k] = v;
        CurrentEpoch = state.Epoch;
        GlobalStep = state.GlobalStep;
    }
}
