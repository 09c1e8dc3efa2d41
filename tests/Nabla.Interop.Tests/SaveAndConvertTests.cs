using System.IO.Compression;
using Nabla.IO;
using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>Writing torch.save zip checkpoints and converting between .pt and .safetensors.</summary>
public class SaveAndConvertTests
{
    [Theory]
    [InlineData("dtypes.pt")]
    [InlineData("strided.pt")]
    [InlineData("legacy_strided.pt")]
    [InlineData("nested.pt")]
    public void PtToSafeTensorsToPtKeepsBytes(string file)
    {
        using var tmp = new Fixtures.TempDir();
        var original = PyTorchCheckpoint.LoadStateDict(Fixtures.Generated(file));
        Assert.Equal(original.Count, CheckpointFiles.Convert(Fixtures.Generated(file), tmp.File("a.safetensors")));
        Fixtures.AssertSameTensors(original, SafeTensors.Load(tmp.File("a.safetensors")));
        CheckpointFiles.Convert(tmp.File("a.safetensors"), tmp.File("b.pt"));
        var back = PyTorchCheckpoint.LoadStateDict(tmp.File("b.pt"));
        Fixtures.AssertSameTensors(original, back);
    }

    [Fact]
    public void SaveWritesTheTorchZipLayout()
    {
        using var tmp = new Fixtures.TempDir();
        var tensors = Fixtures.Expected("dtypes");
        var path = tmp.File("w.pth");
        PyTorchCheckpoint.Save(path, tensors);
        using (var zip = ZipFile.OpenRead(path))
        {
            var names = zip.Entries.Select(e => e.FullName).ToList();
            Assert.Equal("archive/data.pkl", names[0]);
            Assert.Contains("archive/byteorder", names);
            Assert.Contains("archive/version", names);
            Assert.Equal(tensors.Count, names.Count(n => n.StartsWith("archive/data/", StringComparison.Ordinal)));
            Assert.All(zip.Entries, e => Assert.Equal(e.Length, e.CompressedLength)); // stored, not deflated
        }
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(path));
        Assert.True(root.IsOrdered);
        Assert.Equal(tensors.Keys, root.Keys.Cast<string>());
        Fixtures.AssertSameTensors(tensors, PyTorchCheckpoint.LoadStateDict(path));
    }

    [Fact]
    public void SaveHandlesScalarsEmptyAndViews()
    {
        using var tmp = new Fixtures.TempDir();
        var m = Tensor.Arange(12).Reshape(3, 4);
        var tensors = new Dictionary<string, Tensor>
        {
            ["scalar"] = Tensor.Scalar(2.5, DType.Float64),
            ["empty"] = Tensor.Zeros([0, 4]),
            ["view"] = m.Transpose(0, 1),
            ["big.int"] = Tensor.FromArray(new long[] { long.MinValue, long.MaxValue }),
        };
        PyTorchCheckpoint.Save(tmp.File("x.pt"), tensors);
        var back = PyTorchCheckpoint.LoadStateDict(tmp.File("x.pt"));
        Fixtures.AssertSameTensors(tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Contiguous()), back);
        Assert.Empty(back["scalar"].Shape);
    }

    [Fact]
    public void SaveOfEmptyDictLoads()
    {
        using var tmp = new Fixtures.TempDir();
        PyTorchCheckpoint.Save(tmp.File("e.pt"), new Dictionary<string, Tensor>());
        var root = Assert.IsType<PyDict>(PyTorchCheckpoint.Load(tmp.File("e.pt")));
        Assert.Equal(0, root.Count);
    }

    [Fact]
    public void ConvertRejectsUnknownExtensions()
    {
        using var tmp = new Fixtures.TempDir();
        var e = Assert.Throws<ModelFormatException>(() => CheckpointFiles.Convert(Fixtures.Generated("dtypes.pt"), tmp.File("x.onnx")));
        Assert.Contains(".onnx", e.Message);
    }

    [Fact]
    public void StateDictNotFoundNamesTopLevelKeys()
    {
        // An optimizer state dict holds no name → tensor dictionary at any level with string keys only.
        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.LoadStateDict(Fixtures.Generated("optimizer.pt")));
        Assert.Contains("'state'", e.Message);
        Assert.Contains("'param_groups'", e.Message);
    }
}
