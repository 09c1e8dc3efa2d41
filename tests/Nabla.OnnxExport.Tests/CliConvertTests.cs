using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Nabla.IO;
using Nabla.Optim;
using Nabla.Training;
using Xunit;
using static Nabla.OnnxExport.Tests.ExportCheck;

namespace Nabla.OnnxExport.Tests;

/// <summary>`nabla convert CHECKPOINT OUT.onnx --model NAME`, run as the real CLI in a child process.</summary>
public sealed class CliConvertTests : IDisposable
{
    readonly string dir = Path.Combine(Path.GetTempPath(), $"nabla-convert-{Guid.NewGuid():N}");

    public CliConvertTests() => Directory.CreateDirectory(dir);

    public void Dispose()
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
    }

    /// <summary>Runs the built CLI (copied beside the tests) in <paramref name="workDir"/>; 180 s at most.</summary>
    internal static (int code, string stdout, string stderr) Nabla(string workDir, params string[] args)
    {
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (string.IsNullOrEmpty(host) || !File.Exists(host))
            host = Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";
        var psi = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workDir, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Nabla.Cli.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NABLA_OFFLINE"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(180_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"nabla {string.Join(' ', args)} did not finish in 180 s");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>A checkpoint as `nabla train` writes it: the ClassificationTask's state dict under "model.", and the architecture name.</summary>
    string WriteCheckpoint(string name, out Nabla.NN.Module net)
    {
        Tensor.ManualSeed(21);
        net = BuiltinModels.Create(name);
        RandomizeBatchNorms(net, 210);
        var task = new ClassificationTask(net, ps => new OptimizerConfig(new SGD(ps)), name);
        var path = Path.Combine(dir, name + ".safetensors");
        Checkpoint.Save(path, task, null, new TrainingState { Architecture = name, Epoch = 1 });
        return path;
    }

    [Theory]
    [InlineData("cnn")]
    [InlineData("resnet")]
    public void ConvertsACheckpointToOnnx(string name)
    {
        var ckpt = WriteCheckpoint(name, out var net);
        var output = Path.Combine(dir, name + ".onnx");
        var (code, stdout, stderr) = Nabla(dir, "convert", ckpt, output, "--model", name);
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Contains("wrote", stdout);
        net.Eval();
        using var session = new InferenceSession(output);
        foreach (int n in new[] { 1, 5 })
        {
            var x = Images(1, 28, 200)(n);
            Tensor expected;
            using (GradMode.NoGrad()) expected = net.Forward(x);
            AssertClose(expected, RunOrt(session, x), $"{name} batch {n}");
        }
    }

    [Theory]
    [InlineData("lenet")]
    [InlineData("resnet")]
    public void ConvertsByTracingWhenAsked(string name)
    {
        var ckpt = WriteCheckpoint(name, out var net);
        var output = Path.Combine(dir, name + "-traced.onnx");
        var (code, stdout, stderr) = Nabla(dir, "convert", ckpt, output, "--model", name, "--trace");
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Contains("traced", stdout);
        net.Eval();
        using var session = new InferenceSession(output);
        foreach (int n in new[] { 1, 4 })
        {
            var x = Images(1, 28, 230)(n);
            Tensor expected;
            using (GradMode.NoGrad()) expected = net.Forward(x);
            AssertClose(expected, RunOrt(session, x), $"{name} traced, batch {n}");
        }
        // Opsets below 17 are refused by the traced export with a message naming the opset.
        var (code2, _, stderr2) = Nabla(dir, "convert", ckpt, Path.Combine(dir, "old.onnx"), "--model", name, "--trace", "--opset", "13");
        Assert.Equal(1, code2);
        Assert.Contains("opset 13", stderr2);
    }

    [Fact]
    public void ModelDefaultsToTheCheckpointsArchitecture()
    {
        var ckpt = WriteCheckpoint("mlp", out _);
        var (code, stdout, stderr) = Nabla(dir, "convert", ckpt, Path.Combine(dir, "m.onnx"), "--opset", "20", "--static-batch");
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        using var session = new InferenceSession(Path.Combine(dir, "m.onnx"));
        Assert.Equal([1, 1, 28, 28], session.InputMetadata["input"].Dimensions);
    }

    [Fact]
    public void WrongModelAndTensorConversionStillWork()
    {
        var ckpt = WriteCheckpoint("lenet", out _);
        var (code, _, stderr) = Nabla(dir, "convert", ckpt, Path.Combine(dir, "x.onnx"), "--model", "cnn");
        Assert.Equal(1, code);
        Assert.Contains("'lenet'", stderr);

        // The tensor-file paths of convert are unchanged.
        var st = Path.Combine(dir, "w.safetensors");
        SafeTensors.Save(st, new Dictionary<string, Tensor> { ["w"] = Tensor.Randn([2, 3]) });
        var (code2, stdout2, stderr2) = Nabla(dir, "convert", st, Path.Combine(dir, "w.pt"));
        Assert.True(code2 == 0, $"exit {code2}\n{stdout2}\n{stderr2}");
        Assert.True(File.Exists(Path.Combine(dir, "w.pt")));
    }
}
