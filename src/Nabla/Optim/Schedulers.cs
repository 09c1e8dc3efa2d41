namespace Nabla.Optim;

/// <summary>
/// Base of the learning-rate schedulers. Like PyTorch, constructing one applies epoch 0, and each
/// <see cref="Step"/> advances one epoch (or one batch, for per-step schedules such as OneCycleLR).
/// The closed forms used here equal PyTorch's recursive updates in exact arithmetic.
/// </summary>
public abstract class LRScheduler
{
    public Optimizer Optimizer { get; }
    public int LastEpoch { get; protected set; } = -1;
    protected readonly double[] baseLrs;

    protected LRScheduler(Optimizer optimizer)
    {
        Optimizer = optimizer;
        baseLrs = optimizer.ParamGroups.Select(g => g["initial_lr"]).ToArray();
    }

    /// <summary>Call after the constructor of a derived class has set its fields.</summary>
    protected void Initialize() => Step();

    public virtual void Step()
    {
        LastEpoch++;
        for (int i = 0; i < Optimizer.ParamGroups.Count; i++) Optimizer.ParamGroups[i].Lr = LrAt(i, LastEpoch);
    }

    protected abstract double LrAt(int group, int epoch);

    public double[] GetLastLr() => Optimizer.ParamGroups.Select(g => g.Lr).ToArray();

    public virtual Dictionary<string, double> StateDict() => new() { ["last_epoch"] = LastEpoch };

    public virtual void LoadStateDict(Dictionary<string, double> sd)
    {
        LastEpoch = (int)sd["last_epoch"];
        for (int i = 0; i < Optimizer.ParamGroups.Count; i++) Optimizer.ParamGroups[i].Lr = LrAt(i, LastEpoch);
    }
}

public sealed class StepLR : LRScheduler
{
    readonly int stepSize;
    readonly double gamma;
    public StepLR(Optimizer opt, int stepSize, double gamma = 0.1) : base(opt) { this.stepSize = stepSize; this.gamma = gamma; Initialize(); }
    protected override double LrAt(int g, int e) => baseLrs[g] * Math.Pow(gamma, e / stepSize);
}

public sealed class MultiStepLR : LRScheduler
{
    readonly int[] milestones;
    readonly double gamma;
    public MultiStepLR(Optimizer opt, int[] milestones, double gamma = 0.1) : base(opt) { this.milestones = milestones; this.gamma = gamma; Initialize(); }
    protected override double LrAt(int g, int e) => baseLrs[g] * Math.Pow(gamma, milestones.Count(m => m <= e));
}

public sealed class ExponentialLR : LRScheduler
{
    readonly double gamma;
    public ExponentialLR(Optimizer opt, double gamma) : base(opt) { this.gamma = gamma; Initialize(); }
    protected override double LrAt(int g, int e) => baseLrs[g] * Math.Pow(gamma, e);
}

public sealed class CosineAnnealingLR : LRScheduler
{
    readonly int tMax;
    readonly double etaMin;
    public CosineAnnealingLR(Optimizer opt, int tMax, double etaMin = 0) : base(opt) { this.tMax = tMax; this.etaMin = etaMin; Initialize(); }
    protected override double LrAt(int g, int e) => etaMin + (baseLrs[g] - etaMin) * (1 + Math.Cos(Math.PI * e / tMax)) / 2;
}

/// <summary>Scales the rate linearly from startFactor to endFactor over totalIters steps.</summary>
public sealed class LinearLR : LRScheduler
{
    readonly double start, end;
    readonly int total;
    public LinearLR(Optimizer opt, double startFactor = 1.0 / 3, double endFactor = 1.0, int totalIters = 5) : base(opt)
    {
        if (startFactor <= 0 || startFactor > 1) throw new NablaException($"LinearLR: start_factor must be in (0, 1], got {startFactor}");
        (start, end, total) = (startFactor, endFactor, totalIters);
        Initialize();
    }
    protected override double LrAt(int g, int e) => baseLrs[g] * (start + (end - start) * Math.Min(e, total) / total);
}

/// <summary>
/// The one-cycle policy (per batch): warm up from max_lr/div_factor to max_lr over pct_start of the steps,
/// then anneal by cosine to initial_lr/final_div_factor. Momentum (or beta1) cycles inversely when the optimizer has it.
/// </summary>
public sealed class OneCycleLR : LRScheduler
{
    readonly double[] maxLrs;
    readonly int totalSteps;
    readonly double pctStart, divFactor, finalDivFactor, baseMomentum, maxMomentum;
    readonly bool cycleMomentum;

    public OneCycleLR(Optimizer opt, double maxLr, int totalSteps, double pctStart = 0.3, double divFactor = 25, double finalDivFactor = 1e4,
        bool cycleMomentum = true, double baseMomentum = 0.85, double maxMomentum = 0.95) : base(opt)
    {
        if (totalSteps <= 0) throw new NablaException($"OneCycleLR: total_steps must be positive, got {totalSteps}");
        maxLrs = opt.ParamGroups.Select(_ => maxLr).ToArray();
        (this.totalSteps, this.pctStart, this.divFactor, this.finalDivFactor) = (totalSteps, pctStart, divFactor, finalDivFactor);
        this.cycleMomentum = cycleMomentum && opt.ParamGroups.All(g => g.Options.ContainsKey("momentum") || g.Options.ContainsKey("beta1"));
        (this.baseMomentum, this.maxMomentum) = (baseMomentum, maxMomentum);
        foreach (var g in opt.ParamGroups)
        {
            g["initial_lr"] = maxLr / divFactor;
            g["max_lr"] = maxLr;
            g["min_lr"] = g["initial_lr"] / finalDivFactor;
        }
        Initialize();
    }

    static double Cos(double start, double end, double pct) => end + (start - end) / 2 * (Math.Cos(Math.PI * pct) + 1);

    (double phaseEnd, double lrStart, double lrEnd, double mStart, double mEnd)[] Phases(int g)
    {
        double initial = maxLrs[g] / divFactor, min = initial / finalDivFactor;
        return
        [
            (pctStart * totalSteps - 1, initial, maxLrs[g], maxMomentum, baseMomentum),
            (totalSteps - 1, maxLrs[g], min, baseMomentum, maxMomentum),
        ];
    }

    public override void Step()
    {
        if (LastEpoch + 1 >= totalSteps + 1)
            throw new NablaException($"OneCycleLR: tried to step {LastEpoch + 2} times; total_steps is {totalSteps}");
        base.Step();
        if (!cycleMomentum) return;
        for (int i = 0; i < Optimizer.ParamGroups.Count; i++)
        {
            var m = Value(i, LastEpoch, momentum: true);
            var grp = Optimizer.ParamGroups[i];
            if (grp.Options.ContainsKey("beta1")) grp["beta1"] = m;
            else grp["momentum"] = m;
        }
    }

    protected override double LrAt(int g, int e) => Value(g, e, momentum: false);

    double Value(int g, int e, bool momentum)
    {
        double start = 0;
        var phases = Phases(g);
        for (int k = 0; k < phases.Length; k++)
        {
            var p = phases[k];
            if (e <= p.phaseEnd || k == phases.Length - 1)
            {
                double pct = (e - start) / (p.phaseEnd - start);
                return momentum ? Cos(p.mStart, p.mEnd, pct) : Cos(p.lrStart, p.lrEnd, pct);
            }
            start = p.phaseEnd;
        }
        return 0;
    }
}

/// <summary>Runs schedulers one after another, switching at the milestones (each restarts at epoch 0).</summary>
public sealed class SequentialLR : LRScheduler
{
    readonly LRScheduler[] schedulers;
    readonly int[] milestones;

    public SequentialLR(Optimizer opt, LRScheduler[] schedulers, int[] milestones) : base(opt)
    {
        if (milestones.Length != schedulers.Length - 1)
            throw new NablaException($"SequentialLR: expects {schedulers.Length - 1} milestones for {schedulers.Length} schedulers, got {milestones.Length}");
        this.schedulers = schedulers;
        this.milestones = milestones;
        // Undo the steps the sub-schedulers took in their constructors, then start the first one.
        for (int i = 0; i < opt.ParamGroups.Count; i++) opt.ParamGroups[i].Lr = baseLrs[i];
        LastEpoch = 0;
        schedulers[0].LoadStateDict(new() { ["last_epoch"] = 0 });
    }

    public override void Step()
    {
        LastEpoch++;
        int idx = milestones.Count(m => m <= LastEpoch);
        var s = schedulers[idx];
        if (idx > 0 && milestones[idx - 1] == LastEpoch) s.LoadStateDict(new() { ["last_epoch"] = 0 });
        else s.Step();
    }

    protected override double LrAt(int group, int epoch) => Optimizer.ParamGroups[group].Lr;

    public override void LoadStateDict(Dictionary<string, double> sd)
    {
        int target = (int)sd["last_epoch"];
        schedulers[0].LoadStateDict(new() { ["last_epoch"] = 0 });
        LastEpoch = 0;
        while (LastEpoch < target) Step();
    }
}

/// <summary>Reduces the rate by factor when a metric has stopped improving for patience epochs.</summary>
public sealed class ReduceLROnPlateau
{
    readonly Optimizer opt;
    readonly string mode, thresholdMode;
    readonly double factor, threshold, minLr, eps;
    readonly int patience, cooldown;
    double best;
    int badEpochs, cooldownCounter;

    public ReduceLROnPlateau(Optimizer optimizer, string mode = "min", double factor = 0.1, int patience = 10, double threshold = 1e-4,
        string thresholdMode = "rel", int cooldown = 0, double minLr = 0, double eps = 1e-8)
    {
        if (factor >= 1) throw new NablaException($"ReduceLROnPlateau: factor should be < 1.0, got {factor}");
        (opt, this.mode, this.factor, this.patience, this.threshold, this.thresholdMode, this.cooldown, this.minLr, this.eps) =
            (optimizer, mode, factor, patience, threshold, thresholdMode, cooldown, minLr, eps);
        best = mode == "min" ? double.PositiveInfinity : double.NegativeInfinity;
    }

    bool Better(double a)
    {
        if (mode == "min") return thresholdMode == "rel" ? a < best * (1 - threshold) : a < best - threshold;
        return thresholdMode == "rel" ? a > best * (1 + threshold) : a > best + threshold;
    }

    public void Step(double metric)
    {
        if (Better(metric)) { best = metric; badEpochs = 0; }
        else badEpochs++;
        if (cooldownCounter > 0) { cooldownCounter--; badEpochs = 0; }
        if (badEpochs > patience)
        {
            foreach (var g in opt.ParamGroups)
            {
                double newLr = Math.Max(g.Lr * factor, minLr);
                if (g.Lr - newLr > eps) g.Lr = newLr;
            }
            cooldownCounter = cooldown;
            badEpochs = 0;
        }
    }

    public double[] GetLastLr() => opt.ParamGroups.Select(g => g.Lr).ToArray();

    public Dictionary<string, double> StateDict() => new() { ["best"] = best, ["num_bad_epochs"] = badEpochs, ["cooldown_counter"] = cooldownCounter };

    public void LoadStateDict(Dictionary<string, double> sd)
    {
        best = sd["best"];
        badEpochs = (int)sd["num_bad_epochs"];
        cooldownCounter = (int)sd["cooldown_counter"];
    }
}
