using System.Buffers.Binary;
using System.IO.Compression;

namespace Nabla.Training.Tests;

/// <summary>A temporary folder removed on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "nabla-tt-" + Guid.NewGuid().ToString("N")[..12]);
    public TempDir() => Directory.CreateDirectory(Path);
    public string this[string name] => System.IO.Path.Combine(Path, name);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Sets environment variables for the duration of a scope and restores the previous values.</summary>
public sealed class EnvScope : IDisposable
{
    readonly Dictionary<string, string?> saved = new();
    public EnvScope(params (string name, string? value)[] vars)
    {
        foreach (var (n, v) in vars)
        {
            saved[n] = Environment.GetEnvironmentVariable(n);
            Environment.SetEnvironmentVariable(n, v);
        }
    }
    public void Dispose()
    {
        foreach (var (n, v) in saved) Environment.SetEnvironmentVariable(n, v);
    }
}

public static class DataFiles
{
    /// <summary>The repository root (the folder holding Nabla.slnx), found from the test binary's folder.</summary>
    public static string RepoRoot { get; } = FindRoot();

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(System.IO.Path.Combine(d.FullName, "Nabla.slnx"))) return d.FullName;
        throw new InvalidOperationException("cannot find the repository root from " + AppContext.BaseDirectory);
    }

    public static string FashionDir => System.IO.Path.Combine(RepoRoot, "data", "fashion-mnist");

    /// <summary>/work/shared/data/datasets next to the repository (absent on machines without the shared data).</summary>
    public static string SharedDatasets => System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared", "data", "datasets"));

    public static byte[] Gunzip(string path)
    {
        using var gz = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        var ms = new MemoryStream();
        gz.CopyTo(ms);
        return ms.ToArray();
    }

    public static byte[] Gzip(byte[] data)
    {
        var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) gz.Write(data);
        return ms.ToArray();
    }

    /// <summary>An uint8 IDX file: magic 0x00000800 | rank, big-endian sizes, then the bytes.</summary>
    public static byte[] IdxUInt8(int[] shape, ReadOnlySpan<byte> data)
    {
        var b = new byte[4 + 4 * shape.Length + data.Length];
        b[2] = 0x08;
        b[3] = (byte)shape.Length;
        for (int i = 0; i < shape.Length; i++) BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(4 + 4 * i), shape[i]);
        data.CopyTo(b.AsSpan(4 + 4 * shape.Length));
        return b;
    }

    /// <summary>
    /// Writes the first <paramref name="trainCount"/> training and <paramref name="testCount"/> test images of the
    /// real Fashion-MNIST as uncompressed IDX files with the standard names into <paramref name="dir"/>.
    /// </summary>
    public static void WriteFashionSubset(string dir, int trainCount, int testCount)
    {
        Directory.CreateDirectory(dir);
        foreach (var (prefix, n) in new[] { ("train", trainCount), ("t10k", testCount) })
        {
            var img = Gunzip(System.IO.Path.Combine(FashionDir, prefix + "-images-idx3-ubyte.gz"));
            var lab = Gunzip(System.IO.Path.Combine(FashionDir, prefix + "-labels-idx1-ubyte.gz"));
            File.WriteAllBytes(System.IO.Path.Combine(dir, prefix + "-images-idx3-ubyte"), IdxUInt8([n, 28, 28], img.AsSpan(16, n * 784)));
            File.WriteAllBytes(System.IO.Path.Combine(dir, prefix + "-labels-idx1-ubyte"), IdxUInt8([n], lab.AsSpan(8, n)));
        }
    }
}
