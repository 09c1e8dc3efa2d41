using System.Security.Cryptography;

namespace Nabla.Data;

/// <summary>One file of a downloadable data set: its name and the SHA-256 of its uncompressed IDX contents.</summary>
/// <remarks>
/// NOTE: the hash covers the uncompressed bytes, not the .gz, because redistributors (Debian among them)
/// re-compress these files; the pixels and labels stay byte-identical to the original release.
/// </remarks>
public sealed record DataFile(string Name, string Sha256);

/// <summary>Where an MNIST-style data set lives and what its files must hash to.</summary>
public sealed record IdxDatasetSpec(string Name, string[] Mirrors, DataFile TrainImages, DataFile TrainLabels, DataFile TestImages, DataFile TestLabels)
{
    public static readonly IdxDatasetSpec FashionMnist = new("fashion-mnist",
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        new("train-images-idx3-ubyte.gz", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        new("train-labels-idx1-ubyte.gz", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        new("t10k-images-idx3-ubyte.gz", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        new("t10k-labels-idx1-ubyte.gz", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"));

    /// <summary>MNIST; only the test-set hashes are pinned here (the training images were not available to verify).</summary>
    public static readonly IdxDatasetSpec Mnist = new("mnist",
        ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
        new("train-images-idx3-ubyte.gz", ""),
        new("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        new("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        new("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"));
}

/// <summary>
/// MNIST and Fashion-MNIST as tensors: images float32 [N, 1, 28, 28] scaled to [0, 1], labels int64 [N].
/// Files are found, in order: in <c>root</c> when given; in the cache (NABLA_DATA_HOME, else
/// XDG_CACHE_HOME/nabla/datasets, else ~/.cache/nabla/datasets); by download from the official mirror
/// unless offline (NABLA_OFFLINE=1 or <c>download: false</c>), verified and cached; finally from the
/// <c>bundled</c> source (the CLI embeds Fashion-MNIST). Every file's SHA-256 is checked before use.
/// </summary>
public static class IdxDatasets
{
    public static string CacheRoot()
    {
        var env = Environment.GetEnvironmentVariable("NABLA_DATA_HOME");
        if (!string.IsNullOrEmpty(env)) return env;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var baseDir = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(baseDir, "nabla", "datasets");
    }

    public static bool Offline => Environment.GetEnvironmentVariable("NABLA_OFFLINE") is "1" or "true" || Environment.GetEnvironmentVariable("HF_HUB_OFFLINE") is "1";

    /// <summary>Loads the train or test split.</summary>
    public static TensorDataset Load(IdxDatasetSpec spec, bool train, string? root = null, bool download = true, Func<string, Stream?>? bundled = null,
        TextWriter? log = null)
    {
        var img = train ? spec.TrainImages : spec.TestImages;
        var lab = train ? spec.TrainLabels : spec.TestLabels;
        var images = Idx.Read(new MemoryStream(Resolve(spec, img, root, download, bundled, log)), img.Name);
        var labels = Idx.Read(new MemoryStream(Resolve(spec, lab, root, download, bundled, log)), lab.Name);
        if (images.Dim != 3) throw new DataFormatException($"{spec.Name}: {img.Name} must hold [N, H, W] images, got shape {ShapeUtil.Format(images.shape)}");
        if (labels.Dim != 1 || labels.Size(0) != images.Size(0))
            throw new DataFormatException($"{spec.Name}: {lab.Name} holds {labels.NumElements} labels for {images.Size(0)} images");
        // NOTE: one pass from bytes to [0, 1] floats; converting and then dividing would hold two float copies at once.
        var x = Transforms.BytesToUnitFloat(images).Unsqueeze(1);
        return new TensorDataset(x, labels.To(DType.Int64));
    }

    static byte[] Resolve(IdxDatasetSpec spec, DataFile file, string? root, bool download, Func<string, Stream?>? bundled, TextWriter? log)
    {
        var tried = new List<string>();
        if (root is not null)
        {
            var p = Path.Combine(root, file.Name);
            var unzipped = Path.Combine(root, file.Name.EndsWith(".gz") ? file.Name[..^3] : file.Name);
            foreach (var candidate in new[] { p, unzipped })
                if (File.Exists(candidate)) return Verified(File.ReadAllBytes(candidate), file, candidate);
            tried.Add($"local path {root}");
        }
        var cacheDir = Path.Combine(CacheRoot(), spec.Name);
        var cached = Path.Combine(cacheDir, file.Name);
        if (File.Exists(cached)) return Verified(File.ReadAllBytes(cached), file, cached);
        tried.Add($"cache {cacheDir}");
        if (download && !Offline)
        {
            foreach (var mirror in spec.Mirrors)
            {
                var url = mirror + file.Name;
                try
                {
                    using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
                    log?.WriteLine($"downloading {url}");
                    var bytes = http.GetByteArrayAsync(url).GetAwaiter().GetResult();
                    var ok = Verified(bytes, file, url);
                    Directory.CreateDirectory(cacheDir);
                    var tmp = cached + ".part";
                    File.WriteAllBytes(tmp, bytes);
                    File.Move(tmp, cached, overwrite: true);
                    return ok;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
                {
                    tried.Add($"download {url} ({e.GetType().Name}: {e.Message})");
                }
            }
        }
        else tried.Add("download (offline)");
        var s = bundled?.Invoke(file.Name);
        if (s is not null)
        {
            using (s)
            {
                var ms = new MemoryStream();
                s.CopyTo(ms);
                return Verified(ms.ToArray(), file, "bundled " + file.Name);
            }
        }
        throw new DataFormatException($"{spec.Name}: could not find {file.Name}; tried {string.Join("; ", tried)}");
    }

    /// <summary>Checks the SHA-256 of the uncompressed contents, which it returns; a mismatch names the file and both hashes.</summary>
    static byte[] Verified(byte[] bytes, DataFile file, string source)
    {
        if (string.IsNullOrEmpty(file.Sha256)) return bytes;
        byte[] content = Idx.IsGzip(bytes) ? Idx.Gunzip(bytes, source) : bytes;
        var hash = Convert.ToHexStringLower(SHA256.HashData(content));
        if (hash != file.Sha256)
            throw new DataFormatException($"{source}: SHA-256 of the contents is {hash}, expected {file.Sha256}; the file is corrupt or not {file.Name}");
        // NOTE: returns the uncompressed contents so that they are not decompressed a second time.
        return content;
    }
}
