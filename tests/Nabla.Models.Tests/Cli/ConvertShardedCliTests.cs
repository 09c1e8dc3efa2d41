using Nabla.IO;
using Xunit;

namespace Nabla.Models.Tests.Cli;

/// <summary>`nabla convert IN OUT --max-shard-size SIZE` and `nabla convert INDEX OUT`, run as the real CLI.</summary>
public sealed class ConvertShardedCliTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nabla-convert-shards-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void ConvertWritesShardsAndReadsThemBack()
    {
        Tensor.ManualSeed(5);
        var tensors = new Dictionary<string, Tensor>
        {
            ["a"] = Tensor.Randn(100),                               // 400 bytes
            ["b"] = Tensor.Randn(100).To(DType.Float16),             // 200 bytes
            ["c"] = Tensor.FromArray(new[] { 1L, 2L, 3L, 4L }, 2, 2), // 32 bytes
        };
        var input = Path.Combine(dir, "in.safetensors");
        SafeTensors.Save(input, tensors);
        var shards = Path.Combine(dir, "sharded");
        var r = NablaProcess.Run(dir, "convert", input, shards, "--max-shard-size", "0.5KB");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("3 file(s)", r.Stdout);
        Assert.True(File.Exists(Path.Combine(shards, "model-00001-of-00002.safetensors")), r.ToString());
        Assert.True(File.Exists(Path.Combine(shards, "model-00002-of-00002.safetensors")), r.ToString());

        var back = Path.Combine(dir, "back.safetensors");
        r = NablaProcess.Run(dir, "convert", Path.Combine(shards, "model.safetensors.index.json"), back);
        Assert.True(r.ExitCode == 0, r.ToString());
        // Same tensors, so the same bytes as the original single file.
        Assert.Equal(File.ReadAllBytes(input), File.ReadAllBytes(back));

        r = NablaProcess.Run(dir, "convert", input, shards, "--max-shard-size", "lots");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("--max-shard-size", r.Stderr + r.Stdout);
    }

    [Fact]
    public void ConvertPyTorchToSafeTensorsAndBackThenInspect()
    {
        string pt = Path.Combine(Directory.GetParent(Zoo.ZooFixture.Root)!.FullName, "pytorch", "generated", "dtypes.pt");
        var expected = Nabla.Interop.PyTorchCheckpoint.LoadStateDict(pt);
        var st = Path.Combine(dir, "dtypes.safetensors");
        var r = NablaProcess.Run(dir, "convert", pt, st);
        Assert.True(r.ExitCode == 0, r.ToString());
        var back = Path.Combine(dir, "back.pt");
        r = NablaProcess.Run(dir, "convert", st, back);
        Assert.True(r.ExitCode == 0, r.ToString());
        foreach (var (name, t) in expected)
        {
            var a = SafeTensors.Load(st)[name];
            var b = Nabla.Interop.PyTorchCheckpoint.LoadStateDict(back)[name];
            Assert.Equal(t.DType, a.DType);
            Assert.Equal(t.Shape, a.Shape);
            // One-tensor files are equal only if dtype, shape and every element byte are.
            byte[] Bytes(Tensor x) => SafeTensors.Serialize(new Dictionary<string, Tensor> { [name] = x });
            Assert.Equal(Bytes(t), Bytes(a));
            Assert.Equal(Bytes(t), Bytes(b));
        }
        r = NablaProcess.Run(dir, "inspect", back);
        Assert.True(r.ExitCode == 0, r.ToString());
        foreach (var (name, t) in expected)
            Assert.Contains(r.Lines, l => l.StartsWith(name + " ", StringComparison.Ordinal) && l.Contains(SafeTensors.DTypeName(t.DType), StringComparison.Ordinal));
    }
}
