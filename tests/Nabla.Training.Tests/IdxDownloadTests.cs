using System.Net;
using System.Net.Sockets;
using Nabla.Data;
using Xunit;

namespace Nabla.Training.Tests;

/// <summary>
/// The "online" path of <see cref="IdxDatasets"/>: files fetched from a mirror (a real HTTP server on loopback serving
/// the repository's Fashion-MNIST test files), verified by SHA-256, written to the cache, and read from the cache
/// the next time without a request. A corrupted download is refused and never cached.
/// </summary>
public sealed class IdxDownloadTests : IDisposable
{
    readonly HttpListener listener = new();
    readonly string prefix;
    int requests;
    bool corrupt;

    public IdxDownloadTests()
    {
        // HttpListener needs a concrete free port: take one from the OS, then listen on it.
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        prefix = $"http://127.0.0.1:{port}/";
        listener.Prefixes.Add(prefix);
        listener.Start();
        _ = Task.Run(Serve);
    }

    async Task Serve()
    {
        while (listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            Interlocked.Increment(ref requests);
            var name = Path.GetFileName(ctx.Request.Url!.AbsolutePath);
            var path = Path.Combine(DataFiles.FashionDir, name);
            if (!File.Exists(path)) { ctx.Response.StatusCode = 404; ctx.Response.Close(); continue; }
            var bytes = File.ReadAllBytes(path);
            if (corrupt)
            {
                // A valid gzip of different contents: the hash check, not the decompressor, must catch it.
                bytes = DataFiles.Gzip([.. DataFiles.Gunzip(path).Take(1000)]);
            }
            ctx.Response.ContentLength64 = bytes.Length;
            await ctx.Response.OutputStream.WriteAsync(bytes);
            ctx.Response.Close();
        }
    }

    public void Dispose() => listener.Close();

    IdxDatasetSpec Spec => IdxDatasetSpec.FashionMnist with { Mirrors = [prefix] };

    [Fact]
    public void DownloadsVerifiesCachesAndReusesTheCache()
    {
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", null), ("HF_HUB_OFFLINE", null));
        var test = IdxDatasets.Load(Spec, train: false, download: true);
        Assert.Equal(10000, test.Count);
        Assert.Equal(2, requests);
        Assert.True(File.Exists(Path.Combine(cache.Path, "fashion-mnist", "t10k-images-idx3-ubyte.gz")));
        Assert.True(File.Exists(Path.Combine(cache.Path, "fashion-mnist", "t10k-labels-idx1-ubyte.gz")));
        var again = IdxDatasets.Load(Spec, train: false, download: true);
        Assert.Equal(2, requests);   // served from the cache
        Assert.Equal(test.Targets.ToArray<long>(), again.Targets.ToArray<long>());
    }

    [Fact]
    public void ACorruptDownloadIsRefusedAndNotCached()
    {
        using var cache = new TempDir();
        using var _ = new EnvScope(("NABLA_DATA_HOME", cache.Path), ("NABLA_OFFLINE", null), ("HF_HUB_OFFLINE", null));
        corrupt = true;
        var e = Assert.Throws<DataFormatException>(() => IdxDatasets.Load(Spec, train: false, download: true));
        Assert.Contains("SHA-256", e.Message);
        Assert.Contains(prefix, e.Message);
        Assert.False(Directory.Exists(Path.Combine(cache.Path, "fashion-mnist")) &&
                     Directory.EnumerateFiles(Path.Combine(cache.Path, "fashion-mnist")).Any());
    }
}
