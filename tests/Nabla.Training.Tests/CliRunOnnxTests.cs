using Nabla.IO;
using Xunit;

namespace Nabla.Training.Tests;

/// <summary>`nabla run` and `nabla inspect` on the real mnist-8 ONNX model (from ../shared/data next to the repository).</summary>
public class CliRunOnnxTests
{
    static string Mnist8 => Path.GetFullPath(Path.Combine(DataFiles.RepoRoot, "..", "shared", "data", "onnx", "models", "mnist-8"));

    [Fact]
    public void RunWritesEachOutputAsNpyMatchingTheExpectedOutput()
    {
        Assert.True(Directory.Exists(Mnist8), $"the shared mnist-8 model is missing at {Mnist8}");
        using var tmp = new TempDir();
        var r = Cli.Run(tmp.Path, tmp.Path, "run", Path.Combine(Mnist8, "model.onnx"),
            "--input", "Input3=" + Path.Combine(Mnist8, "test_data_set_0", "input_0.pb"), "--output-dir", "out");
        Assert.True(r.ExitCode == 0, r.ToString());
        var got = Npy.Load(Path.Combine(tmp.Path, "out", "Plus214_Output_0.npy"));
        var expected = Nabla.Interop.Onnx.OnnxModel.ReadTensor(Path.Combine(Mnist8, "test_data_set_0", "output_0.pb"));
        Assert.Equal(expected.Shape, got.Shape);
        Assert.True(got.AllClose(expected, rtol: 1e-3, atol: 1e-5), $"got {got}, expected {expected}");

        // The same input as .npy gives the same output.
        Npy.Save(Path.Combine(tmp.Path, "in.npy"), Nabla.Interop.Onnx.OnnxModel.ReadTensor(Path.Combine(Mnist8, "test_data_set_0", "input_0.pb")));
        var r2 = Cli.Run(tmp.Path, tmp.Path, "run", Path.Combine(Mnist8, "model.onnx"), "--input", "Input3=in.npy", "--output-dir", "out2");
        Assert.True(r2.ExitCode == 0, r2.ToString());
        Assert.Equal(got.ToArray<float>(), Npy.Load(Path.Combine(tmp.Path, "out2", "Plus214_Output_0.npy")).ToArray<float>());
    }

    [Fact]
    public void RunWithProfilePrintsEachNodesTime()
    {
        using var tmp = new TempDir();
        var r = Cli.Run(tmp.Path, tmp.Path, "run", Path.Combine(Mnist8, "model.onnx"),
            "--input", "Input3=" + Path.Combine(Mnist8, "test_data_set_0", "input_0.pb"), "--output-dir", "out", "--profile", "4");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("4 profiled runs:", r.Stdout);
        Assert.Contains("by operator", r.Stdout);
        Assert.Contains("Plus214", r.Stdout);                      // the last node, [1, 10]
        Assert.Contains("[1, 10]", r.Stdout);
        Assert.Matches(@"\s4\s+com\.nabla\.FusedConv", r.Stdout);   // four calls of a fused convolution
        // A bad count is refused before anything runs or is written.
        foreach (var count in new[] { "-1", "0", "many" })
        {
            var bad = Cli.Run(tmp.Path, tmp.Path, "run", Path.Combine(Mnist8, "model.onnx"),
                "--input", "Input3=" + Path.Combine(Mnist8, "test_data_set_0", "input_0.pb"), "--output-dir", "bad", "--profile", count);
            Assert.Equal(2, bad.ExitCode);
            Assert.Contains("--profile", bad.Stderr);
            Assert.False(Directory.Exists(Path.Combine(tmp.Path, "bad")));
        }
    }

    [Fact]
    public void RunNamesMissingAndUnknownInputs()
    {
        using var tmp = new TempDir();
        var r = Cli.Run(tmp.Path, tmp.Path, "run", Path.Combine(Mnist8, "model.onnx"));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("missing inputs: Input3", r.Stderr);
        var r2 = Cli.Run(tmp.Path, tmp.Path, "run", Path.Combine(Mnist8, "model.onnx"), "--input", "Nope=" + Path.Combine(Mnist8, "test_data_set_0", "input_0.pb"));
        Assert.Equal(2, r2.ExitCode);
    }

    [Fact]
    public void InspectListsInputsOutputsOperatorsAndParameters()
    {
        using var tmp = new TempDir();
        var r = Cli.Run(tmp.Path, tmp.Path, "inspect", Path.Combine(Mnist8, "model.onnx"));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("Input3: Tensor Float32[1, 1, 28, 28]", r.Stdout);
        Assert.Contains("Plus214_Output_0", r.Stdout);
        Assert.Contains("Conv", r.Stdout);
        Assert.Contains("5,998 parameters", r.Stdout);
    }
}
