using Nabla.Data;
using Xunit;

namespace Nabla.Training.Tests;

public class IdxTests
{
    [Fact]
    public void ReadsRealFashionMnistTestFiles()
    {
        var images = Idx.Read(Path.Combine(DataFiles.FashionDir, "t10k-images-idx3-ubyte.gz"));
        var labels = Idx.Read(Path.Combine(DataFiles.FashionDir, "t10k-labels-idx1-ubyte.gz"));
        Assert.Equal([10000, 28, 28], images.Shape);
        Assert.Equal(DType.UInt8, images.DType);
        Assert.Equal([10000], labels.Shape);
        Assert.Equal(new byte[] { 9, 2, 1, 1, 6, 1, 4, 6, 5, 7 }, labels.ToArray<byte>()[..10]);
        var train = Idx.Read(Path.Combine(DataFiles.FashionDir, "train-labels-idx1-ubyte.gz"));
        Assert.Equal([60000], train.Shape);
        Assert.Equal(new byte[] { 9, 0, 0, 3, 0, 2, 7, 2, 5, 5 }, train.ToArray<byte>()[..10]);
        // Each class appears 1,000 times in the test split.
        Assert.All(labels.ToArray<byte>().GroupBy(b => b), g => Assert.Equal(1000, g.Count()));
    }

    [Fact]
    public void ReadsRealMnistTestFiles()
    {
        var dir = Path.Combine(DataFiles.SharedDatasets, "mnist-test");
        Assert.True(Directory.Exists(dir), $"the shared MNIST test set is missing at {dir} (../shared/data next to the repository)");
        var images = Idx.Read(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"));
        var labels = Idx.Read(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"));
        Assert.Equal([10000, 28, 28], images.Shape);
        Assert.Equal(new byte[] { 7, 2, 1, 0, 4, 1, 4, 9, 5, 9 }, labels.ToArray<byte>()[..10]);
        // The first test digit (a 7) has ink in the middle rows and a blank border.
        var first = images.Select(0, 0).ToArray<byte>();
        Assert.Equal(0, first[0]);
        Assert.True(first.Count(b => b > 128) > 50);
    }

    [Fact]
    public void UncompressedAndOtherDTypesRoundTrip()
    {
        using var tmp = new TempDir();
        var bytes = DataFiles.IdxUInt8([2, 3], [1, 2, 3, 4, 5, 6]);
        File.WriteAllBytes(tmp["a.idx"], bytes);
        var t = Idx.Read(tmp["a.idx"]);
        Assert.Equal([2, 3], t.Shape);
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6 }, t.ToArray<byte>());
        File.WriteAllBytes(tmp["a.idx.gz"], DataFiles.Gzip(bytes));
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6 }, Idx.Read(tmp["a.idx.gz"]).ToArray<byte>());
        // float32 (type 0x0D), big-endian.
        var f = new byte[] { 0, 0, 0x0D, 1, 0, 0, 0, 2, 0x3F, 0x80, 0, 0, 0xC0, 0, 0, 0 };
        File.WriteAllBytes(tmp["f.idx"], f);
        Assert.Equal([1f, -2f], Idx.Read(tmp["f.idx"]).ToArray<float>());
    }

    static DataFormatException ReadBad(TempDir tmp, string name, byte[] content)
    {
        var path = tmp[name];
        File.WriteAllBytes(path, content);
        var e = Assert.Throws<DataFormatException>(() => Idx.Read(path));
        Assert.Contains(path, e.Message);
        return e;
    }

    [Fact]
    public void TruncatedIdxFile()
    {
        using var tmp = new TempDir();
        var full = DataFiles.IdxUInt8([3, 2, 2], new byte[12]);
        var e = ReadBad(tmp, "trunc.idx", full[..^2]);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("[3, 2, 2]", e.Message);
        var h = ReadBad(tmp, "header.idx", full[..9]);
        Assert.Contains("truncated header", h.Message);
        Assert.Contains("too short", ReadBad(tmp, "tiny.idx", [0, 0]).Message);
    }

    [Fact]
    public void TruncatedGzip()
    {
        using var tmp = new TempDir();
        var gz = File.ReadAllBytes(Path.Combine(DataFiles.FashionDir, "t10k-labels-idx1-ubyte.gz"));
        var e = ReadBad(tmp, "labels.gz", gz[..(gz.Length / 2)]);
        Assert.Contains("gzip", e.Message);
        Assert.Contains("truncated", e.Message);
        // Cut inside the gzip trailer: the deflate data is complete but the CRC and size are missing.
        var t = ReadBad(tmp, "labels2.gz", gz[..^3]);
        Assert.Contains("gzip", t.Message);
    }

    [Fact]
    public void CorruptGzipBody()
    {
        using var tmp = new TempDir();
        var gz = DataFiles.Gzip(DataFiles.IdxUInt8([64], Enumerable.Range(0, 64).Select(i => (byte)(i * 7)).ToArray()));
        for (int i = 12; i < gz.Length - 8; i++) gz[i] ^= 0x5A;
        var e = ReadBad(tmp, "bad.gz", gz);
        Assert.Contains("gzip", e.Message);
    }

    [Fact]
    public void BadMagic()
    {
        using var tmp = new TempDir();
        var bytes = DataFiles.IdxUInt8([2], [1, 2]);
        bytes[0] = 0x12;
        Assert.Contains("bad magic", ReadBad(tmp, "magic.idx", bytes).Message);
        var badType = DataFiles.IdxUInt8([2], [1, 2]);
        badType[2] = 0x42;
        Assert.Contains("type", ReadBad(tmp, "type.idx", badType).Message);
        var rank0 = DataFiles.IdxUInt8([2], [1, 2]);
        rank0[3] = 0;
        Assert.Contains("rank", ReadBad(tmp, "rank.idx", rank0).Message);
    }

    [Fact]
    public void TrailingBytes()
    {
        using var tmp = new TempDir();
        var bytes = DataFiles.IdxUInt8([2], [1, 2]).Concat(new byte[] { 9, 9, 9 }).ToArray();
        var e = ReadBad(tmp, "trailing.idx", bytes);
        Assert.Contains("3 unexpected bytes", e.Message);
    }

    [Fact]
    public void MissingFile()
    {
        var e = Assert.Throws<DataFormatException>(() => Idx.Read("/nonexistent/nabla/x.idx"));
        Assert.Contains("/nonexistent/nabla/x.idx", e.Message);
    }
}

public class IdxDatasetResolutionTests
{
    static readonly string[] TestFiles = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"];

    static void CopyTestFiles(string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (var f in TestFiles) File.Copy(Path.Combine(DataFiles.FashionDir, f), Path.Combine(dir, f));
    }

    static void AssertFashionTest(TensorDataset ds)
    {
        Assert.Equal(10000, ds.Count);
        Assert.Equal([10000, 1, 28, 28], ds.Inputs.Shape);
        Assert.Equal(DType.Float32, ds.Inputs.DType);
        Assert.Equal(DType.Int64, ds.Targets.DType);
        Assert.Equal([9L, 2, 1, 1, 6], ds.Targets.Slice(0, 0, 5).ToArray<long>());
        var px = ds.Inputs.Select(0, 0).Contiguous().ToArray<float>();
        Assert.InRange(px.Min(), 0f, 0f);
        Assert.InRange(px.Max(), 0.5f, 1f);
    }

    [Fact]
    public void LocalRootWithTheFilesWorks()
    {
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", "1"));
        AssertFashionTest(IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train: false, root: DataFiles.FashionDir, download: false));
    }

    [Fact]
    public void UncompressedFilesInTheRootAreAccepted()
    {
        using var root = new TempDir();
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", "1"));
        foreach (var f in TestFiles) File.WriteAllBytes(root[f[..^3]], DataFiles.Gunzip(Path.Combine(DataFiles.FashionDir, f)));
        AssertFashionTest(IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train: false, root: root.Path, download: false));
    }

    [Fact]
    public void CorruptedFileFailsTheHashCheck()
    {
        using var root = new TempDir();
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", "1"));
        CopyTestFiles(root.Path);
        // Change one label: still a valid IDX file, but not the published one.
        var labels = DataFiles.Gunzip(root["t10k-labels-idx1-ubyte.gz"]);
        labels[100] = (byte)((labels[100] + 1) % 10);
        File.WriteAllBytes(root["t10k-labels-idx1-ubyte.gz"], DataFiles.Gzip(labels));
        var e = Assert.Throws<DataFormatException>(() => IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train: false, root: root.Path, download: false));
        Assert.Contains("SHA-256", e.Message);
        Assert.Contains(root["t10k-labels-idx1-ubyte.gz"], e.Message);
        Assert.Contains(IdxDatasetSpec.FashionMnist.TestLabels.Sha256, e.Message);
        Assert.Contains("corrupt", e.Message);
    }

    [Fact]
    public void CacheDirectoryFromNablaDataHome()
    {
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", "1"));
        Assert.Equal(cache.Path, IdxDatasets.CacheRoot());
        CopyTestFiles(Path.Combine(cache.Path, "fashion-mnist"));
        AssertFashionTest(IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train: false, download: false));
    }

    [Fact]
    public void CacheRootFallsBackToXdgCacheHome()
    {
        using var _ = new EnvScope(("NABLA_DATA_HOME", null), ("XDG_CACHE_HOME", "/tmp/xdg-nabla-test"));
        Assert.Equal(Path.Combine("/tmp/xdg-nabla-test", "nabla", "datasets"), IdxDatasets.CacheRoot());
    }

    [Fact]
    public void OfflineFallsBackToTheBundledProvider()
    {
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", "1"));
        Assert.True(IdxDatasets.Offline);
        var requested = new List<string>();
        // The CLI's real bundled provider: Fashion-MNIST embedded in Nabla.Cli.dll.
        var cli = typeof(Nabla.Cli.Args).Assembly;
        Stream? Bundled(string name) { requested.Add(name); return cli.GetManifestResourceStream("fashion-mnist/" + name); }
        // download: true, but offline wins, so nothing is fetched and the bundled copy is used.
        AssertFashionTest(IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train: false, download: true, bundled: Bundled));
        Assert.Equal(TestFiles, requested);
        Assert.Empty(Directory.EnumerateFileSystemEntries(cache.Path));
    }

    [Fact]
    public void NothingFoundNamesEveryPlaceTried()
    {
        using var cache = new TempDir();
        using var root = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", "1"));
        var e = Assert.Throws<DataFormatException>(() => IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train: false, root: root.Path));
        Assert.Contains("t10k-images-idx3-ubyte.gz", e.Message);
        Assert.Contains(root.Path, e.Message);
        Assert.Contains(cache.Path, e.Message);
        Assert.Contains("offline", e.Message);
    }

    [Fact]
    public void CorruptBundledCopyIsRejected()
    {
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", "1"));
        var e = Assert.Throws<DataFormatException>(() => IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train: false,
            bundled: name => new MemoryStream(DataFiles.Gzip(DataFiles.IdxUInt8([1], [3])))));
        Assert.Contains("bundled", e.Message);
        Assert.Contains("SHA-256", e.Message);
    }
}

public class CsvDatasetTests
{
    static string Iris => Path.Combine(DataFiles.SharedDatasets, "sklearn", "iris.csv");

    [Fact]
    public void LoadsSklearnIris()
    {
        Assert.True(File.Exists(Iris), $"the shared iris.csv is missing at {Iris} (../shared/data next to the repository)");
        // NOTE: sklearn's CSVs start with a count line ("150,4,setosa,versicolor,virginica"), not column names;
        // it is recognized and columns are named by index. The target is the last column.
        var ds = CsvDataset.Load(Iris);
        Assert.Equal(150, ds.Count);
        Assert.Equal([150, 4], ds.Inputs.Shape);
        Assert.Equal(DType.Int64, ds.Targets.DType);
        Assert.Equal([5.1f, 3.5f, 1.4f, 0.2f], ds.Inputs.Select(0, 0).ToArray<float>());
        var labels = ds.Targets.ToArray<long>();
        Assert.Equal([0L, 1, 2], labels.Distinct().OrderBy(v => v));
        Assert.All(labels.GroupBy(v => v), g => Assert.Equal(50, g.Count()));
        // The same file as a regression table with column 0 (sepal length) as the target.
        var reg = CsvDataset.Load(Iris, targetColumn: "0", classification: false);
        Assert.Equal(DType.Float32, reg.Targets.DType);
        Assert.Equal(5.1f, reg.Targets.ToArray<float>()[0]);
        Assert.Equal([3.5f, 1.4f, 0.2f, 0f], reg.Inputs.Select(0, 0).ToArray<float>());
    }

    [Fact]
    public void LoadsSklearnWineWhoseCountLineIsShorterThanItsRows()
    {
        var wine = Path.Combine(DataFiles.SharedDatasets, "sklearn", "wine_data.csv");
        Assert.True(File.Exists(wine), $"the shared wine_data.csv is missing at {wine}");
        var ds = CsvDataset.Load(wine); // "178,13,class_0,class_1,class_2", then 14 cells per row
        Assert.Equal([178, 13], ds.Inputs.Shape);
        Assert.Equal(14.23f, ds.Inputs.ToArray<float>()[0]);
        Assert.Equal([0L, 1, 2], ds.Targets.ToArray<long>().Distinct().Order());
    }

    [Fact]
    public void TargetColumnByHeaderName()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp["t.csv"], "a,label,b\n1,0,2\n3,1,4\n\n");
        var ds = CsvDataset.Load(tmp["t.csv"], targetColumn: "label");
        Assert.Equal([1f, 2f, 3f, 4f], ds.Inputs.ToArray<float>());
        Assert.Equal([0L, 1], ds.Targets.ToArray<long>());
        var e = Assert.Throws<DataFormatException>(() => CsvDataset.Load(tmp["t.csv"], targetColumn: "nope"));
        Assert.Contains("nope", e.Message);
        Assert.Contains("a, label, b", e.Message);
    }

    [Fact]
    public void MissingFile()
    {
        var e = Assert.Throws<DataFormatException>(() => CsvDataset.Load("/nonexistent/nabla/data.csv"));
        Assert.Contains("/nonexistent/nabla/data.csv", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void NonNumericCellNamesLineAndColumn()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp["bad.csv"], "x,y,label\n1,2,0\n3,abc,1\n");
        var e = Assert.Throws<DataFormatException>(() => CsvDataset.Load(tmp["bad.csv"]));
        Assert.Contains(tmp["bad.csv"], e.Message);
        Assert.Contains("line 3", e.Message);
        Assert.Contains("column y", e.Message);
        Assert.Contains("'abc'", e.Message);
        File.WriteAllText(tmp["bad2.csv"], "1,2,0\n3,4,?\n");
        var e2 = Assert.Throws<DataFormatException>(() => CsvDataset.Load(tmp["bad2.csv"], hasHeader: false));
        Assert.Contains("line 2", e2.Message);
        Assert.Contains("column 2", e2.Message);
    }

    [Fact]
    public void RaggedRows()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp["ragged.csv"], "x,y,label\n1,2,0\n3,1\n");
        var e = Assert.Throws<DataFormatException>(() => CsvDataset.Load(tmp["ragged.csv"]));
        Assert.Contains(tmp["ragged.csv"], e.Message);
        Assert.Contains("line 3 has 2 columns, expected 3", e.Message);
    }

    [Fact]
    public void EmptyAndHeaderOnlyFiles()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp["empty.csv"], "\n\n");
        Assert.Contains("empty", Assert.Throws<DataFormatException>(() => CsvDataset.Load(tmp["empty.csv"])).Message);
        File.WriteAllText(tmp["header.csv"], "a,b\n");
        Assert.Contains("no data rows", Assert.Throws<DataFormatException>(() => CsvDataset.Load(tmp["header.csv"])).Message);
    }
}
