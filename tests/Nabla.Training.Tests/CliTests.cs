using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace Nabla.Training.Tests;

/// <summary>Runs the real `nabla` entry point (Nabla.Cli.dll from the build output) as a child process.</summary>
public static class Cli
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string[] Lines => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        public JsonElement LastJson => JsonDocument.Parse(Lines[^1]).RootElement;
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
    }

    static string Dll => Path.Combine(AppContext.BaseDirectory, "Nabla.Cli.dll");

    static string DotnetHost()
    {
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(host) && File.Exists(host)) return host;
        var self = Environment.ProcessPath;
        return self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";
    }

    public static Result Run(string workDir, string dataHome, params string[] args)
    {
        var psi = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workDir,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(Dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Never touch the network or the user's cache from tests.
        psi.Environment["NABLA_OFFLINE"] = "1";
        psi.Environment["NABLA_DATA_HOME"] = dataHome;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(180_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"nabla {string.Join(' ', args)} did not finish in 180 s");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>A 2,000/500-image Fashion-MNIST subset as IDX files, and one `nabla train` run on it shared by the tests.</summary>
public sealed class CliFixture : IDisposable
{
    readonly TempDir tmp = new();
    public string Root => tmp.Path;
    public string Dataset => tmp["fashion-small"];
    public string DataHome => tmp["cache"];
    public string Output => tmp["run"];
    public string LastCheckpoint => Path.Combine(Output, "checkpoints", "last.safetensors");
    public Cli.Result Train { get; }

    public CliFixture()
    {
        Directory.CreateDirectory(DataHome);
        DataFiles.WriteFashionSubset(Dataset, 2000, 500);
        Train = Cli.Run(Root, DataHome, "train", "--model", "mlp", "--dataset", Dataset, "--epochs", "1", "--json", "--output-dir", Output);
    }

    public Cli.Result Run(params string[] args) => Cli.Run(Root, DataHome, args);

    public void Dispose() => tmp.Dispose();
}

public class CliTests(CliFixture fx) : IClassFixture<CliFixture>
{
    [Theory]
    [InlineData("quickstart", new[] { "--epochs", "--batch-size", "--lr", "--seed", "--output-dir", "--json" })]
    [InlineData("train", new[] { "--model", "--dataset", "--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--output-dir", "--resume", "--offline", "--json" })]
    [InlineData("eval", new[] { "--checkpoint", "--model", "--dataset", "--batch-size", "--offline", "--json" })]
    [InlineData("inspect", new[] { "FILE" })]
    public void HelpForEveryVerb(string verb, string[] options)
    {
        foreach (var flag in new[] { "--help", "-h" })
        {
            var r = fx.Run(verb, flag);
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains("nabla " + verb, r.Stdout);
            foreach (var o in options) Assert.Contains(o, r.Stdout);
        }
    }

    [Fact]
    public void TopLevelUsage()
    {
        var help = fx.Run("--help");
        Assert.Equal(0, help.ExitCode);
        foreach (var verb in new[] { "quickstart", "train", "eval", "inspect" }) Assert.Contains(verb, help.Stdout);
        var none = fx.Run();
        Assert.Equal(1, none.ExitCode);
        Assert.Contains("usage", none.Stdout);
        var unknown = fx.Run("fly");
        Assert.Equal(2, unknown.ExitCode);
        Assert.Contains("unknown command 'fly'", unknown.Stderr);
    }

    [Theory]
    [InlineData("train", "--bogus", "1")]
    [InlineData("eval", "--nope")]
    [InlineData("quickstart", "--model", "mlp")]
    [InlineData("inspect", "--x", "y")]
    public void UnknownOptionExitsTwo(string verb, string option, params string[] rest)
    {
        var r = fx.Run([verb, option, .. rest]);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains($"unknown option '{option}'", r.Stderr);
        Assert.Contains($"nabla {verb} --help", r.Stderr);
    }

    [Fact]
    public void BadOptionValuesExitTwo()
    {
        var r = fx.Run("train", "--epochs", "many");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("'--epochs' expects an integer, got 'many'", r.Stderr);
        var z = fx.Run("train", "--epochs", "0", "--dataset", fx.Dataset);
        Assert.Equal(2, z.ExitCode);
        Assert.Contains("--epochs must be at least 1", z.Stderr);
        var missing = fx.Run("train", "--epochs");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("needs a value", missing.Stderr);
        var opt = fx.Run("train", "--optimizer", "lbfgs", "--dataset", fx.Dataset);
        Assert.Equal(2, opt.ExitCode);
        Assert.Contains("lbfgs", opt.Stderr);
    }

    [Fact]
    public void TrainWritesJsonAndOutputs()
    {
        var r = fx.Train;
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("2,000 training and 500 test images", r.Stdout);
        var json = r.LastJson;
        double acc = json.GetProperty("test_accuracy").GetDouble();
        Assert.InRange(acc, 0.5, 1.0); // an MLP after one epoch on 2,000 images
        Assert.InRange(json.GetProperty("test_loss").GetDouble(), 0.05, 2.0);
        Assert.Equal(1, json.GetProperty("epochs").GetInt32());
        Assert.True(json.GetProperty("seconds").GetDouble() > 0);
        Assert.True(File.Exists(fx.LastCheckpoint));
        Assert.True(File.Exists(Path.Combine(fx.Output, "checkpoints", "best.safetensors")));
        Assert.True(File.Exists(Path.Combine(fx.Output, "metrics.csv")));
        Assert.True(File.Exists(Path.Combine(fx.Output, "curves.png")));
        Assert.Single(Directory.GetFiles(Path.Combine(fx.Output, "tensorboard"), "events.out.tfevents.*"));
        var (_, _, state) = Checkpoint.Load(fx.LastCheckpoint);
        Assert.Equal("mlp", state.Architecture);
        Assert.Equal(1, state.Epoch);
        Assert.Equal(32, state.GlobalStep); // ceil(2000 / 64)
    }

    [Fact]
    public void EvalReproducesTheTestMetrics()
    {
        var r = fx.Run("eval", "--checkpoint", fx.LastCheckpoint, "--model", "mlp", "--dataset", fx.Dataset, "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("500 images", r.Stdout);
        var train = fx.Train.LastJson;
        var json = r.LastJson;
        Assert.Equal(train.GetProperty("test_accuracy").GetDouble(), json.GetProperty("test_accuracy").GetDouble());
        Assert.Equal(train.GetProperty("test_loss").GetDouble(), json.GetProperty("test_loss").GetDouble(), 4);
        Assert.Equal(1, json.GetProperty("epochs").GetInt32());
    }

    [Fact]
    public void InspectListsTheCheckpoint()
    {
        var r = fx.Run("inspect", fx.LastCheckpoint);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("model.net.1.weight", r.Stdout);
        Assert.Contains("[512, 784]", r.Stdout);
        Assert.Contains("model.net.5.bias", r.Stdout);
        Assert.Contains("optimizer.state.", r.Stdout);
        // 784·512+512 + 512·256+256 + 256·10+10
        Assert.Contains("535,818 parameters", r.Stdout);
        Assert.Contains("metadata nabla.checkpoint", r.Stdout);
        var none = fx.Run("inspect");
        Assert.Equal(2, none.ExitCode);
        var missing = fx.Run("inspect", Path.Combine(fx.Root, "nothing.safetensors"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("file not found", missing.Stderr);
        var notSafetensors = Path.Combine(fx.Root, "junk.safetensors");
        File.WriteAllText(notSafetensors, "this is not a safetensors file");
        var junk = fx.Run("inspect", notSafetensors);
        Assert.Equal(1, junk.ExitCode);
        Assert.Contains(notSafetensors, junk.Stderr);
    }

    [Fact]
    public void EvalWithTheWrongModelFailsClearly()
    {
        var r = fx.Run("eval", "--checkpoint", fx.LastCheckpoint, "--model", "lenet", "--dataset", fx.Dataset);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("'mlp'", r.Stderr);
        Assert.Contains("'lenet'", r.Stderr);
        Assert.Contains(fx.LastCheckpoint, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr); // a message, not a stack trace
    }

    [Fact]
    public void MissingDatasetOrCheckpointFailsClearly()
    {
        var missing = Path.Combine(fx.Root, "no-such-dataset");
        var r = fx.Run("train", "--model", "mlp", "--dataset", missing, "--epochs", "1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(missing, r.Stderr);
        Assert.Contains("neither fashion-mnist, mnist nor an existing folder", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);

        // A folder without the IDX files.
        var empty = Path.Combine(fx.Root, "empty-dataset");
        Directory.CreateDirectory(empty);
        var e = fx.Run("eval", "--checkpoint", fx.LastCheckpoint, "--model", "mlp", "--dataset", empty);
        Assert.Equal(1, e.ExitCode);
        Assert.Contains("t10k-images-idx3-ubyte", e.Stderr);

        var c = fx.Run("eval", "--checkpoint", Path.Combine(fx.Root, "missing.safetensors"), "--model", "mlp", "--dataset", fx.Dataset);
        Assert.Equal(1, c.ExitCode);
        Assert.Contains("file not found", c.Stderr);
        var noCkpt = fx.Run("eval", "--model", "mlp");
        Assert.Equal(2, noCkpt.ExitCode);
        Assert.Contains("--checkpoint is required", noCkpt.Stderr);
    }

    [Fact]
    public void ResumeContinuesFromTheCheckpoint()
    {
        var copy = Path.Combine(fx.Root, "resume.safetensors");
        File.Copy(fx.LastCheckpoint, copy, overwrite: true);
        var outDir = Path.Combine(fx.Root, "resumed");
        var r = fx.Run("train", "--model", "mlp", "--dataset", fx.Dataset, "--epochs", "2", "--json", "--output-dir", outDir, "--resume", copy);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(2, r.LastJson.GetProperty("epochs").GetInt32());
        var (_, _, state) = Checkpoint.Load(Path.Combine(outDir, "checkpoints", "last.safetensors"));
        Assert.Equal(2, state.Epoch);
        Assert.Equal(64, state.GlobalStep);
        // Two epochs in one run give the same weights, bit for bit, as one epoch plus one resumed epoch.
        var straightDir = Path.Combine(fx.Root, "straight");
        var straight = fx.Run("train", "--model", "mlp", "--dataset", fx.Dataset, "--epochs", "2", "--json", "--output-dir", straightDir);
        Assert.True(straight.ExitCode == 0, straight.ToString());
        var (w1, _, _) = Checkpoint.Load(Path.Combine(straightDir, "checkpoints", "last.safetensors"));
        var (w2, _, _) = Checkpoint.Load(Path.Combine(outDir, "checkpoints", "last.safetensors"));
        Tiny.AssertBitIdentical(w1.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>()), w2.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>()));
        Assert.Equal(straight.LastJson.GetProperty("test_accuracy").GetDouble(), r.LastJson.GetProperty("test_accuracy").GetDouble());
        // Resuming an mlp checkpoint as another model is refused.
        var bad = fx.Run("train", "--model", "lenet", "--dataset", fx.Dataset, "--epochs", "2", "--output-dir", Path.Combine(fx.Root, "bad"), "--resume", copy);
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("'mlp'", bad.Stderr);
        Assert.Contains("'lenet'", bad.Stderr);
    }
}
