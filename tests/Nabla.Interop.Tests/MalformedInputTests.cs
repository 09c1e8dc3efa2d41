using System.IO.Compression;
using System.Text;
using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>Broken and adversarial files: always a ModelFormatException naming the file, never a crash or a hang.</summary>
public class MalformedInputTests
{
    static byte[] Zip(params (string Name, byte[] Data)[] entries)
    {
        var ms = new MemoryStream();
        using (var z = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, data) in entries)
            {
                using var s = z.CreateEntry(name, CompressionLevel.NoCompression).Open();
                s.Write(data);
            }
        return ms.ToArray();
    }

    static (string Name, byte[] Data)[] Entries(string path)
    {
        using var z = ZipFile.OpenRead(path);
        return z.Entries.Select(e =>
        {
            using var s = e.Open();
            var ms = new MemoryStream();
            s.CopyTo(ms);
            return (e.FullName, ms.ToArray());
        }).ToArray();
    }

    static ModelFormatException LoadFails(byte[] bytes, string name = "bad.pt")
    {
        using var tmp = new Fixtures.TempDir();
        var path = tmp.File(name);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.Load(path));
        Assert.Contains(name, e.Message);
        return e;
    }

    static ModelFormatException PickleFails(params byte[][] parts) =>
        LoadFails(Zip(("archive/data.pkl", parts.SelectMany(p => p).ToArray()), ("archive/version", "3\n"u8.ToArray())));

    static readonly byte[] P2 = [0x80, 0x02];

    [Fact]
    public void MissingFileEmptyFileAndNonCheckpoint()
    {
        Assert.Contains("not found", Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.Load("/nonexistent/x.pt")).Message);
        Assert.Contains("not a PyTorch checkpoint", LoadFails([]).Message);
        Assert.Contains("not a PyTorch checkpoint", LoadFails("hello world, not a checkpoint"u8.ToArray()).Message);
        // A plain pickle (no legacy magic number).
        Assert.Contains("magic", LoadFails([0x80, 0x02, 0x4B, 0x05, 0x2E]).Message);
    }

    [Fact]
    public void TarFormatIsRefused()
    {
        var tar = new byte[1024];
        "ustar"u8.CopyTo(tar.AsSpan(257));
        tar[0] = (byte)'t';
        Assert.Contains("tar", LoadFails(tar).Message);
    }

    [Theory]
    [InlineData("dtypes.pt")]
    [InlineData("legacy_dtypes.pt")]
    [InlineData("optimizer.pt")]
    [InlineData("legacy_strided.pt")]
    public void TruncatedFiles(string file)
    {
        var bytes = File.ReadAllBytes(Fixtures.Generated(file));
        foreach (int cut in new[] { 1, 4, 10, 30, 100, bytes.Length / 3, bytes.Length / 2, bytes.Length - 100, bytes.Length - 22, bytes.Length - 1 })
            LoadFails(bytes[..cut]);
    }

    [Fact]
    public void MissingDataPkl()
    {
        var e = LoadFails(Zip(("archive/byteorder", "little"u8.ToArray()), ("archive/data/0", new byte[8])));
        Assert.Contains("data.pkl", e.Message);
    }

    [Fact]
    public void MissingStorageRecord()
    {
        var entries = Entries(Fixtures.Generated("dtypes.pt")).Where(e => !e.Name.EndsWith("/data/3", StringComparison.Ordinal)).ToArray();
        var e = LoadFails(Zip(entries));
        Assert.Contains("storage '3'", e.Message);
    }

    [Fact]
    public void StorageRecordTooShort()
    {
        var entries = Entries(Fixtures.Generated("dtypes.pt"))
            .Select(e => e.Name.EndsWith("/data/0", StringComparison.Ordinal) ? (e.Name, e.Data[..5]) : e).ToArray();
        var e = LoadFails(Zip(entries));
        Assert.Contains("storage '0'", e.Message);
    }

    [Fact]
    public void TensorPastTheEndOfItsStorage()
    {
        var entries = Entries(Fixtures.Generated("dtypes.pt"));
        // Claim a larger first size: 'K' 0x02 (size 2) → 'J' 2^20.
        var pkl = entries.First(e => e.Name.EndsWith("data.pkl", StringComparison.Ordinal)).Data;
        var s = Encoding.Latin1.GetString(pkl);
        int at = s.IndexOf("K\u0002K\u0003\u0086", StringComparison.Ordinal);
        Assert.True(at > 0);
        var patched = pkl[..at].Concat(new byte[] { (byte)'J', 0, 0, 0x10, 0 }).Concat(pkl[(at + 2)..]).ToArray();
        var e = LoadFails(Zip(entries.Select(x => x.Name.EndsWith("data.pkl", StringComparison.Ordinal) ? (x.Name, patched) : x).ToArray()));
        Assert.Contains("past the end of storage", e.Message);
        // The error names the tensor by its key in the state dict: one of dtypes.pt's tensors of size (2, 3).
        var candidates = PyTorchCheckpoint.LoadStateDict(Fixtures.Generated("dtypes.pt")).Where(kv => kv.Value.Shape.SequenceEqual([2, 3])).Select(kv => kv.Key).ToList();
        Assert.NotEmpty(candidates);
        Assert.Contains(candidates, name => e.Message.Contains($"bad.pt: tensor '{name}': ", StringComparison.Ordinal));
    }

    [Fact]
    public void UnsupportedDTypeIsNamed()
    {
        var entries = Entries(Fixtures.Generated("dtypes.pt"));
        var patched = entries.Select(x => x.Name.EndsWith("data.pkl", StringComparison.Ordinal)
            ? (x.Name, Encoding.Latin1.GetBytes(Encoding.Latin1.GetString(x.Data).Replace("torch\nIntStorage\n", "torch\nQInt32Storage\n")))
            : x).ToArray();
        var e = LoadFails(Zip(patched));
        Assert.Contains("qint32", e.Message);
    }

    [Fact]
    public void BadOpcodes()
    {
        Assert.Contains("0xFF", PickleFails(P2, [0xFF, 0x2E]).Message);
        Assert.Contains("unsupported pickle protocol", PickleFails([0x80, 0x09, 0x4E, 0x2E]).Message);
        Assert.Contains("OBJ", PickleFails(P2, "(o."u8.ToArray()).Message);
        Assert.Contains("EXT", PickleFails(P2, [0x82, 0x01, 0x2E]).Message);
    }

    [Fact]
    public void StackUnderflowAndMarks()
    {
        Assert.Contains("underflow", PickleFails(P2, "R."u8.ToArray()).Message);
        Assert.Contains("underflow", PickleFails(P2, "s."u8.ToArray()).Message);
        Assert.Contains("underflow", PickleFails(P2, "."u8.ToArray()).Message);
        Assert.Contains("underflow", PickleFails(P2, "N(0."u8.ToArray()).Message);
        Assert.Contains("MARK", PickleFails(P2, "t."u8.ToArray()).Message);
        // A value below a MARK cannot be popped from above it.
        Assert.Contains("underflow", PickleFails(P2, "N(a."u8.ToArray()).Message);
    }

    [Fact]
    public void HugeLengthsAllocateNothing()
    {
        Assert.Contains("past the end", PickleFails(P2, [(byte)'X', 0xF0, 0xFF, 0xFF, 0xFF, 0x41]).Message);
        Assert.Contains("past the end", PickleFails(P2, [0x8D, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x41]).Message);
        Assert.Contains("past the end", PickleFails(P2, [0x8E, 0, 0, 0, 0, 0, 0, 0, 0x80]).Message);
        Assert.Contains("past the end", PickleFails(P2, [0x8B, 0xFF, 0xFF, 0xFF, 0x7F, 0x01]).Message);
        Assert.Contains("past the end", PickleFails(P2, [(byte)'B', 0xFF, 0xFF, 0xFF, 0xFF]).Message);
    }

    [Fact]
    public void MemoAndStructureErrors()
    {
        Assert.Contains("memo key 5", PickleFails(P2, [(byte)'h', 5, 0x2E]).Message);
        Assert.Contains("no STOP", PickleFails(P2, "}"u8.ToArray()).Message);
        Assert.Contains("not a list", PickleFails(P2, "}Na."u8.ToArray()).Message);
        Assert.Contains("not a dict", PickleFails(P2, "]NNs."u8.ToArray()).Message);
        Assert.Contains("unhashable", PickleFails(P2, "}]Ns."u8.ToArray()).Message);
        Assert.Contains("persistent id", PickleFails(P2, "NQ."u8.ToArray()).Message);
        Assert.Contains("persistent id", PickleFails(P2, "(X\u0001\u0000\u0000\u0000xtQ."u8.ToArray()).Message);
        Assert.Contains("BUILD", PickleFails(P2, "]Nb."u8.ToArray()).Message);
        Assert.Contains("not a storage", PickleFails(P2, "ctorch._utils\n_rebuild_tensor_v2\n(NK\u0000)))N}tR."u8.ToArray()).Message);
    }

    [Fact]
    public void DeepNestingIsBounded()
    {
        const int depth = 200_000;
        var pkl = new List<byte>(P2);
        pkl.AddRange(Enumerable.Repeat((byte)']', depth));
        pkl.AddRange(Enumerable.Repeat((byte)'a', depth - 1));
        pkl.Add((byte)'.');
        Assert.Contains("nested", PickleFails(pkl.ToArray()).Message);
    }

    [Fact]
    public void DeeplyNestedTuplesInKeysAndPersistentIds()
    {
        const int depth = 100_000;
        var nested = new List<byte>(P2) { (byte)'N' };
        nested.AddRange(Enumerable.Repeat((byte)0x85, depth)); // TUPLE1, depth times
        Assert.Contains("persistent id", PickleFails([.. nested, (byte)'Q', (byte)'.']).Message);
        var asKey = new List<byte>(P2) { (byte)'}', (byte)'N' };
        asKey.AddRange(Enumerable.Repeat((byte)0x85, depth));
        Assert.Contains("unhashable", PickleFails([.. asKey, (byte)'N', (byte)'s', (byte)'.']).Message);
        Assert.Contains("nested", PickleFails([.. nested, (byte)'.']).Message);
    }

    [Fact]
    public void BigEndianByteOrderIsSwapped()
    {
        // Rewrite dtypes.pt as a big-endian writer would: byteorder "big", every element byte-reversed.
        var sizes = new Dictionary<string, int> { ["0"] = 4, ["1"] = 8, ["2"] = 2, ["3"] = 2, ["4"] = 8, ["5"] = 4, ["6"] = 1, ["7"] = 1, ["8"] = 1 };
        var entries = Entries(Fixtures.Generated("dtypes.pt")).Select(e =>
        {
            int slash = e.Name.LastIndexOf('/');
            if (e.Name[..slash].EndsWith("/data", StringComparison.Ordinal))
            {
                var b = (byte[])e.Data.Clone();
                int size = sizes[e.Name[(slash + 1)..]];
                for (int i = 0; i < b.Length; i += size) Array.Reverse(b, i, size);
                return (e.Name, b);
            }
            return e;
        }).Where(e => !e.Name.EndsWith("/byteorder", StringComparison.Ordinal)).Append(("dtypes/byteorder", "big"u8.ToArray())).ToArray();
        using var tmp = new Fixtures.TempDir();
        File.WriteAllBytes(tmp.File("be.pt"), Zip(entries));
        Fixtures.AssertSameTensors(Fixtures.Expected("dtypes"), PyTorchCheckpoint.LoadStateDict(tmp.File("be.pt")));
    }

    [Fact]
    public void TorchScriptArchive()
    {
        var e = LoadFails(Zip(("m/data.pkl", [0x80, 0x02, 0x4E, 0x2E]), ("m/code/__torch__.py", "x"u8.ToArray()), ("m/constants.pkl", [0x80, 0x02, 0x29, 0x2E])));
        Assert.Contains("TorchScript", e.Message);
    }

    [Theory]
    [InlineData("dtypes.pt")]
    [InlineData("strided.pt")]
    [InlineData("legacy_strided.pt")]
    [InlineData("legacy_nested.pt")]
    [InlineData("optimizer.pt")]
    [InlineData("protocol4.pth")]
    public void RandomCorruptionNeverCrashes(string file)
    {
        var original = File.ReadAllBytes(Fixtures.Generated(file));
        using var tmp = new Fixtures.TempDir();
        var path = tmp.File("fuzz.pt");
        var rng = new Random(1234);
        for (int round = 0; round < 150; round++)
        {
            var bytes = (byte[])original.Clone();
            int flips = 1 + rng.Next(4);
            for (int i = 0; i < flips; i++) bytes[rng.Next(bytes.Length)] = (byte)rng.Next(256);
            File.WriteAllBytes(path, bytes);
            try
            {
                PyTorchCheckpoint.Load(path);
            }
            catch (ModelFormatException e)
            {
                Assert.Contains("fuzz.pt", e.Message);
            }
        }
    }

    [Fact]
    public void PickleBodyFuzzNeverCrashes()
    {
        // Corrupt only data.pkl (re-zipped so the archive itself stays valid) to exercise the VM.
        var entries = Entries(Fixtures.Generated("nested.pt"));
        int pi = Array.FindIndex(entries, e => e.Name.EndsWith("data.pkl", StringComparison.Ordinal));
        using var tmp = new Fixtures.TempDir();
        var path = tmp.File("pkl-fuzz.pt");
        var rng = new Random(99);
        for (int round = 0; round < 300; round++)
        {
            var copy = entries.ToArray();
            var pkl = (byte[])entries[pi].Data.Clone();
            for (int i = 0, n = 1 + rng.Next(3); i < n; i++) pkl[rng.Next(pkl.Length)] = (byte)rng.Next(256);
            if (rng.Next(4) == 0) pkl = pkl[..rng.Next(pkl.Length)];
            copy[pi] = (entries[pi].Name, pkl);
            File.WriteAllBytes(path, Zip(copy));
            try { PyTorchCheckpoint.Load(path); }
            catch (ModelFormatException e) { Assert.Contains("pkl-fuzz.pt", e.Message); }
        }
    }
}
