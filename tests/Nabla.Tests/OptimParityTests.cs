using System.Globalization;
using System.Text.Json;
using Nabla.IO;
using Nabla.Optim;
using Xunit;

namespace Nabla.Tests;

/// <summary>
/// Replays the trajectories of tools/fixtures/make_optim_fixtures.py (torch 1.13): a fixed 2-layer MLP fitted by MSE
/// for 20 steps with each optimizer (every parameter after every step), and the learning rate of each scheduler.
/// </summary>
public sealed class OptimParityTests
{
    const double Rtol = 1e-5, Atol = 1e-6;

    static string Dir => Path.Combine(AppContext.BaseDirectory, "fixtures", "optim");

    static readonly Lazy<(Dictionary<string, Tensor> T, JsonElement Cases, int Steps)> Optimizers = new(() => LoadFile("optimizers"));
    static readonly Lazy<(Dictionary<string, Tensor> T, JsonElement Cases, int Steps)> Schedulers = new(() => LoadFile("schedulers"));

    static (Dictionary<string, Tensor>, JsonElement, int) LoadFile(string name)
    {
        var (t, meta) = SafeTensors.LoadWithMetadata(Path.Combine(Dir, name + ".safetensors"));
        return (t, JsonDocument.Parse(meta["cases"]).RootElement.Clone(), int.Parse(meta["steps"], CultureInfo.InvariantCulture));
    }

    static JsonElement Case(JsonElement cases, string name) => cases.EnumerateArray().First(c => c.GetProperty("name").GetString() == name);

    public static IEnumerable<object[]> OptimizerCases() =>
        Optimizers.Value.Cases.EnumerateArray().Select(c => new object[] { c.GetProperty("name").GetString()! });

    public static IEnumerable<object[]> SchedulerCases() =>
        Schedulers.Value.Cases.EnumerateArray().Select(c => new object[] { c.GetProperty("name").GetString()! });

    static Dictionary<string, double> Options(JsonElement o) =>
        o.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());

    /// <summary>Builds a Nabla optimizer from the fixture's optimizer name and options (Nabla's option names).</summary>
    static Optimizer MakeOptimizer(string kind, List<ParamGroup> groups, Dictionary<string, double> o)
    {
        double Get(string k, double d) => o.TryGetValue(k, out var v) ? v : d;
        return kind switch
        {
            "SGD" => new SGD(groups, Get("lr", 1e-3), Get("momentum", 0), Get("dampening", 0), Get("weight_decay", 0), Get("nesterov", 0) != 0),
            "Adam" => new Adam(groups, Get("lr", 1e-3), Get("beta1", 0.9), Get("beta2", 0.999), Get("eps", 1e-8), Get("weight_decay", 0), Get("amsgrad", 0) != 0),
            "AdamW" => new AdamW(groups, Get("lr", 1e-3), Get("beta1", 0.9), Get("beta2", 0.999), Get("eps", 1e-8), Get("weight_decay", 1e-2), Get("amsgrad", 0) != 0),
            "RMSprop" => new RMSprop(groups, Get("lr", 1e-2), Get("alpha", 0.99), Get("eps", 1e-8), Get("weight_decay", 0), Get("momentum", 0), Get("centered", 0) != 0),
            "Adagrad" => new Adagrad(groups, Get("lr", 1e-2), Get("lr_decay", 0), Get("weight_decay", 0), Get("initial_accumulator_value", 0), Get("eps", 1e-10)),
            _ => throw new ArgumentException(kind),
        };
    }

    /// <summary>Builds a scheduler; ReduceLROnPlateau is returned as its step function.</summary>
    static (LRScheduler? sched, ReduceLROnPlateau? plateau) MakeScheduler(Optimizer opt, JsonElement spec)
    {
        var a = spec.GetProperty("args");
        double D(string k) => a.GetProperty(k).GetDouble();
        int I(string k) => a.GetProperty(k).GetInt32();
        LRScheduler s = spec.GetProperty("type").GetString() switch
        {
            "StepLR" => new StepLR(opt, I("step_size"), D("gamma")),
            "MultiStepLR" => new MultiStepLR(opt, a.GetProperty("milestones").EnumerateArray().Select(x => x.GetInt32()).ToArray(), D("gamma")),
            "ExponentialLR" => new ExponentialLR(opt, D("gamma")),
            "CosineAnnealingLR" => new CosineAnnealingLR(opt, I("t_max"), D("eta_min")),
            "LinearLR" => new LinearLR(opt, D("start_factor"), D("end_factor"), I("total_iters")),
            "OneCycleLR" => new OneCycleLR(opt, D("max_lr"), I("total_steps"), D("pct_start"), D("div_factor"), D("final_div_factor")),
            "SequentialLR" => new SequentialLR(opt,
                a.GetProperty("schedulers").EnumerateArray().Select(x => MakeScheduler(opt, x).sched!).ToArray(),
                a.GetProperty("milestones").EnumerateArray().Select(x => x.GetInt32()).ToArray()),
            "ReduceLROnPlateau" => null!,
            var k => throw new ArgumentException(k),
        };
        if (s is not null) return (s, null);
        return (null, new ReduceLROnPlateau(opt, a.GetProperty("mode").GetString()!, D("factor"), I("patience"), D("threshold"),
            a.GetProperty("threshold_mode").GetString()!, I("cooldown"), D("min_lr")));
    }

    static Tensor Loss(Tensor[] p, Tensor x, Tensor y)
    {
        var h = x.Matmul(p[0].T).Add(p[1]).Tanh();
        return h.Matmul(p[2].T).Add(p[3]).Sub(y).Square().Mean();
    }

    static Tensor[] InitialParams(Dictionary<string, Tensor> t) =>
        Enumerable.Range(0, 4).Select(i => { var p = t[$"init.p{i}"].Clone(); p.RequiresGrad = true; return p; }).ToArray();

    static (Optimizer opt, LRScheduler? sched) Build(JsonElement spec, Tensor[] ps)
    {
        var groups = new List<ParamGroup>();
        if (spec.TryGetProperty("groups", out var gs))
            foreach (var g in gs.EnumerateArray())
                groups.Add(new ParamGroup(g.GetProperty("params").EnumerateArray().Select(i => ps[i.GetInt32()]), Options(g.GetProperty("options"))));
        else groups.Add(new ParamGroup(ps));
        var opt = MakeOptimizer(spec.GetProperty("optimizer").GetString()!, groups, Options(spec.GetProperty("options")));
        var sched = spec.TryGetProperty("scheduler", out var ss) ? MakeScheduler(opt, ss).sched : null;
        return (opt, sched);
    }

    static void TrainStep(Optimizer opt, LRScheduler? sched, Tensor[] ps, Tensor x, Tensor y, out double loss)
    {
        opt.ZeroGrad();
        var l = Loss(ps, x, y);
        loss = l.Item();
        l.Backward();
        opt.Step();
        sched?.Step();
    }

    [Theory]
    [MemberData(nameof(OptimizerCases))]
    public void TrajectoryMatchesPyTorch(string name)
    {
        var (t, cases, steps) = Optimizers.Value;
        var spec = Case(cases, name);
        var ps = InitialParams(t);
        var (opt, sched) = Build(spec, ps);
        var x = t["data.x"];
        var y = t["data.y"];
        var losses = t[name + ".loss"].ToDoubleArray();
        var lrs = t[name + ".lr"];
        for (int step = 0; step < steps; step++)
        {
            TrainStep(opt, sched, ps, x, y, out double loss);
            Assert.True(Math.Abs(loss - losses[step]) <= Atol + Rtol * Math.Abs(losses[step]), $"{name} step {step}: loss {loss:R}, PyTorch {losses[step]:R}");
            ModuleFixture.AssertClose($"{name} step {step} lr", lrs.Select(0, step), Tensor.FromArray(opt.ParamGroups.Select(g => g.Lr).ToArray()), 1e-12, 1e-15);
            for (int i = 0; i < ps.Length; i++)
                ModuleFixture.AssertClose($"{name} step {step} param {i}", t[$"{name}.p{i}"].Select(0, step), ps[i], Rtol, Atol);
        }
    }

    [Theory]
    [MemberData(nameof(SchedulerCases))]
    public void LearningRatesMatchPyTorch(string name)
    {
        var (t, cases, steps) = Schedulers.Value;
        var spec = Case(cases, name);
        var p0 = Tensor.Zeros([3]);
        var p1 = Tensor.Zeros([2]);
        p0.RequiresGrad = p1.RequiresGrad = true;
        var opt = new SGD([new ParamGroup([p0], new() { ["lr"] = 0.1 }), new ParamGroup([p1], new() { ["lr"] = 0.02 })], lr: 0.1, momentum: 0.9);
        var (sched, plateau) = MakeScheduler(opt, spec);
        var metrics = spec.TryGetProperty("metrics", out var ms) ? ms.EnumerateArray().Select(m => m.GetDouble()).ToArray() : [];
        var lr = t[name + ".lr"];
        t.TryGetValue(name + ".momentum", out var mom);
        void Check(int k)
        {
            ModuleFixture.AssertClose($"{name} lr after {k} steps", lr.Select(0, k), Tensor.FromArray(opt.ParamGroups.Select(g => g.Lr).ToArray()), 1e-10, 1e-14);
            if (mom is not null)
                ModuleFixture.AssertClose($"{name} momentum after {k} steps", mom.Select(0, k), Tensor.FromArray(opt.ParamGroups.Select(g => g["momentum"]).ToArray()), 1e-10, 1e-14);
        }
        Check(0);
        for (int k = 0; k < steps; k++)
        {
            opt.Step();
            if (plateau is not null) plateau.Step(metrics[k]);
            else sched!.Step();
            Check(k + 1);
        }
    }

    [Theory]
    [InlineData("sgd_nesterov_wd")]
    [InlineData("adam_wd_amsgrad")]
    [InlineData("adamw_amsgrad")]
    [InlineData("rmsprop_centered_momentum_wd")]
    [InlineData("adagrad_decay_wd_init")]
    [InlineData("sgd_two_groups")]
    public void StateDictRoundTripContinuesTheSameTrajectory(string name)
    {
        var (t, cases, steps) = Optimizers.Value;
        var spec = Case(cases, name);
        var x = t["data.x"];
        var y = t["data.y"];
        var ps = InitialParams(t);
        var (opt, _) = Build(spec, ps);
        for (int s = 0; s < steps / 2; s++) TrainStep(opt, null, ps, x, y, out _);
        var saved = opt.StateDict();

        // A fresh optimizer on copies of the parameters, restored from the state dict.
        var ps2 = ps.Select(p => { var q = p.Detach().Clone(); q.RequiresGrad = true; return q; }).ToArray();
        var (opt2, _) = Build(spec, ps2);
        opt2.LoadStateDict(saved);
        for (int s = steps / 2; s < steps; s++)
        {
            TrainStep(opt, null, ps, x, y, out _);
            TrainStep(opt2, null, ps2, x, y, out _);
            for (int i = 0; i < ps.Length; i++)
            {
                Assert.Equal(ps[i].ToDoubleArray(), ps2[i].ToDoubleArray());
                ModuleFixture.AssertClose($"{name} step {s} param {i}", t[$"{name}.p{i}"].Select(0, s), ps2[i], Rtol, Atol);
            }
        }
    }
}
