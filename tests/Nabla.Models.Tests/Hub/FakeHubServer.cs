using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Nabla.Models.Tests.Hub;

/// <summary>How the server misbehaves on the next GET of a file's bytes.</summary>
public enum Fault
{
    None,
    /// <summary>Announce the full Content-Length, send half, close cleanly (FIN). Once.</summary>
    TruncateOnce,
    /// <summary>Send a third, then reset the connection (RST). Once.</summary>
    DropOnce,
    /// <summary>Serve bytes of the right length but wrong content, every time.</summary>
    Corrupt,
    /// <summary>Serve the content followed by extra bytes, every time.</summary>
    TooLong,
    /// <summary>Accept and never answer, every time.</summary>
    Hang,
}

public sealed record SeenRequest(string Method, string Path, IReadOnlyDictionary<string, string> Headers)
{
    public string? Header(string name) => Headers.TryGetValue(name.ToLowerInvariant(), out var v) ? v : null;
}

/// <summary>
/// A real HTTP/1.1 server on 127.0.0.1 (ephemeral port, one request per connection) that serves the Hugging Face Hub URL
/// layout from a folder: <c>{root}/{org}/{name}/{commit}/{files}</c>, branches in <see cref="Branches"/>. LFS files
/// (*.safetensors, *.bin) answer the HEAD with a 302 to an absolute "CDN" URL on <c>localhost</c> and X-Linked-Etag/Size.
/// </summary>
public sealed class FakeHubServer : IDisposable
{
    readonly TcpListener listener;
    readonly CancellationTokenSource stop = new();
    readonly Task loop;

    public string Root { get; }
    public int Port { get; }
    public string Endpoint => $"http://127.0.0.1:{Port}";

    /// <summary>"org/name@branch" → commit.</summary>
    public ConcurrentDictionary<string, string> Branches { get; } = new();
    public ConcurrentDictionary<string, string> Renamed { get; } = new();
    public HashSet<string> PrivateRepos { get; } = new();
    public HashSet<string> GatedRepos { get; } = new();
    public HashSet<string> PlainUnauthorizedRepos { get; } = new();
    public string Token { get; set; } = "hf_test_secret";

    /// <summary>"org/name/path" → fault on the next GET of those bytes.</summary>
    public ConcurrentDictionary<string, Fault> Faults { get; } = new();
    public ConcurrentQueue<SeenRequest> Requests { get; } = new();

    public FakeHubServer(string root)
    {
        Root = root;
        listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        Port = ((IPEndPoint)listener.LocalEndpoint).Port;
        loop = Task.Run(AcceptLoop);
    }

    public static string Sha256Hex(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));

    /// <summary>The git blob id: sha1("blob {size}\0" + content).</summary>
    public static string GitSha1(byte[] data)
    {
        var header = Encoding.ASCII.GetBytes($"blob {data.Length}\0");
        return Convert.ToHexStringLower(SHA1.HashData([.. header, .. data]));
    }

    public static bool IsLfs(string path) => path.EndsWith(".safetensors", StringComparison.Ordinal) || path.EndsWith(".bin", StringComparison.Ordinal);

    public void AddFile(string repo, string commit, string path, byte[] content)
    {
        var full = Path.Combine(Root, repo, commit, path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllBytes(full, content);
    }

    public List<SeenRequest> TakeRequests()
    {
        var list = new List<SeenRequest>();
        while (Requests.TryDequeue(out var r)) list.Add(r);
        return list;
    }

    public void Dispose()
    {
        stop.Cancel();
        listener.Stop();
        try
        {
            loop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
    }

    async Task AcceptLoop()
    {
        while (!stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptSocketAsync(stop.Token);
            }
            catch (Exception)
            {
                return;
            }
            _ = Task.Run(() => Handle(socket));
        }
    }

    async Task Handle(Socket socket)
    {
        bool reset = false;
        try
        {
            socket.ReceiveTimeout = 5000;
            socket.SendTimeout = 5000;
            using var stream = new NetworkStream(socket, ownsSocket: false);
            var req = await ReadRequest(stream);
            if (req is null) return;
            Requests.Enqueue(req);
            reset = await Route(req, stream);
        }
        catch (Exception)
        {
            // A client that went away: nothing to do.
        }
        finally
        {
            if (reset) socket.LingerState = new LingerOption(true, 0);
            else
            {
                try
                {
                    socket.Shutdown(SocketShutdown.Both);
                }
                catch (SocketException)
                {
                }
            }
            socket.Close();
        }
    }

    static async Task<SeenRequest?> ReadRequest(NetworkStream stream)
    {
        var buf = new List<byte>();
        var one = new byte[1];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        while (buf.Count < 65536)
        {
            int n = await stream.ReadAsync(one, cts.Token);
            if (n == 0) return null;
            buf.Add(one[0]);
            if (buf.Count >= 4 && buf[^1] == '\n' && buf[^2] == '\r' && buf[^3] == '\n' && buf[^4] == '\r') break;
        }
        var lines = Encoding.ASCII.GetString(buf.ToArray()).Split("\r\n");
        var first = lines[0].Split(' ');
        var headers = new Dictionary<string, string>();
        foreach (var l in lines.Skip(1))
        {
            int c = l.IndexOf(':');
            if (c > 0) headers[l[..c].Trim().ToLowerInvariant()] = l[(c + 1)..].Trim();
        }
        return new SeenRequest(first[0], first[1], headers);
    }

    /// <returns>true when the connection should be reset rather than closed</returns>
    async Task<bool> Route(SeenRequest req, NetworkStream s)
    {
        var rawPath = req.Path.Split('?')[0];
        var segs = rawPath.TrimStart('/').Split('/').Select(Uri.UnescapeDataString).ToArray();

        if (segs.Length >= 2 && segs[0] == "cdn")
            return await ServeCdn(req, s, segs[1]);

        if (segs.Length == 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "revision")
        {
            var repo = segs[2] + "/" + segs[3];
            if (Renamed.TryGetValue(repo, out var newName))
            {
                await Respond(s, 307, new() { ["Location"] = $"/api/models/{newName}/revision/{Uri.EscapeDataString(segs[5])}" });
                return false;
            }
            if (await Guard(req, s, repo)) return false;
            var commit = Resolve(repo, segs[5]);
            if (commit is null)
            {
                await Respond(s, 404, new() { ["X-Error-Code"] = "RevisionNotFound", ["X-Error-Message"] = "Invalid rev id: " + segs[5] });
                return false;
            }
            var dir = Path.Combine(Root, repo, commit);
            var files = Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
                .Select(f => Path.GetRelativePath(dir, f).Replace('\\', '/')).Order(StringComparer.Ordinal).ToList();
            using var ms = new MemoryStream();
            using (var w = new Utf8JsonWriter(ms))
            {
                w.WriteStartObject();
                w.WriteString("id", repo);
                w.WriteString("sha", commit);
                w.WriteStartArray("siblings");
                foreach (var f in files)
                {
                    w.WriteStartObject();
                    w.WriteString("rfilename", f);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            await Respond(s, 200, new() { ["Content-Type"] = "application/json" }, ms.ToArray(), req.Method == "HEAD");
            return false;
        }

        int resolve = Array.IndexOf(segs, "resolve");
        if (resolve == 2 && segs.Length >= 5)
        {
            var repo = segs[0] + "/" + segs[1];
            var rev = segs[3];
            var file = string.Join('/', segs[4..]);
            if (Renamed.TryGetValue(repo, out var newName))
            {
                var rest = string.Join('/', rawPath.TrimStart('/').Split('/')[2..]);
                await Respond(s, 307, new() { ["Location"] = $"/{newName}/{rest}" });
                return false;
            }
            if (await Guard(req, s, repo)) return false;
            var commit = Resolve(repo, rev);
            if (commit is null)
            {
                await Respond(s, 404, new() { ["X-Error-Code"] = "RevisionNotFound", ["X-Error-Message"] = "Invalid rev id: " + rev });
                return false;
            }
            var full = Path.Combine(Root, repo, commit, file);
            if (!File.Exists(full))
            {
                await Respond(s, 404, new() { ["X-Error-Code"] = "EntryNotFound", ["X-Error-Message"] = "Entry not found", ["X-Repo-Commit"] = commit });
                return false;
            }
            var data = File.ReadAllBytes(full);
            if (IsLfs(file))
            {
                var sha = Sha256Hex(data);
                await Respond(s, 302, new()
                {
                    ["Location"] = $"http://localhost:{Port}/cdn/{sha}?repo={Uri.EscapeDataString(repo)}&file={Uri.EscapeDataString(file)}&commit={commit}",
                    ["X-Repo-Commit"] = commit,
                    ["X-Linked-Etag"] = $"\"{sha}\"",
                    ["X-Linked-Size"] = data.Length.ToString(),
                    ["ETag"] = $"\"{GitSha1(Encoding.ASCII.GetBytes("pointer " + sha))}\"",
                });
                return false;
            }
            var headers = new Dictionary<string, string> { ["X-Repo-Commit"] = commit, ["ETag"] = $"\"{GitSha1(data)}\"" };
            if (req.Method == "HEAD")
            {
                await Respond(s, 200, headers, data, headOnly: true);
                return false;
            }
            return await ServeBytes(req, s, repo + "/" + file, data, headers);
        }
        await Respond(s, 404, new());
        return false;
    }

    async Task<bool> ServeCdn(SeenRequest req, NetworkStream s, string sha)
    {
        var q = System.Web.HttpUtility.ParseQueryString(req.Path.Contains('?') ? req.Path[(req.Path.IndexOf('?') + 1)..] : "");
        var full = Path.Combine(Root, q["repo"]!, q["commit"]!, q["file"]!);
        var data = File.ReadAllBytes(full);
        if (Sha256Hex(data) != sha)
        {
            await Respond(s, 404, new());
            return false;
        }
        return await ServeBytes(req, s, q["repo"] + "/" + q["file"], data, new());
    }

    async Task<bool> ServeBytes(SeenRequest req, NetworkStream s, string key, byte[] data, Dictionary<string, string> headers)
    {
        var fault = Faults.TryGetValue(key, out var f) ? f : Fault.None;
        if (fault is Fault.TruncateOnce or Fault.DropOnce) Faults.TryRemove(key, out _);
        if (fault == Fault.Hang)
        {
            await Task.Delay(TimeSpan.FromSeconds(30), stop.Token);
            return true;
        }
        if (fault == Fault.Corrupt)
        {
            data = (byte[])data.Clone();
            for (int i = 0; i < data.Length; i += 97) data[i] ^= 0x5A;
        }
        if (fault == Fault.TooLong) data = [.. data, .. "extra bytes"u8.ToArray()];

        int status = 200;
        long start = 0;
        if (req.Header("range") is { } range && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
        {
            start = long.Parse(range[6..^1]);
            if (start >= data.Length)
            {
                await Respond(s, 416, new() { ["Content-Range"] = $"bytes */{data.Length}" });
                return false;
            }
            status = 206;
            headers["Content-Range"] = $"bytes {start}-{data.Length - 1}/{data.Length}";
        }
        var body = data.AsMemory((int)start);
        headers["Content-Length"] = body.Length.ToString();
        await WriteHead(s, status, headers);
        switch (fault)
        {
            case Fault.TruncateOnce:
                await s.WriteAsync(body[..(body.Length / 2)]);
                await s.FlushAsync();
                return false;
            case Fault.DropOnce:
                await s.WriteAsync(body[..(body.Length / 3)]);
                await s.FlushAsync();
                await Task.Delay(100);
                return true;
            default:
                await s.WriteAsync(body);
                await s.FlushAsync();
                return false;
        }
    }

    /// <summary>Answers 401/403 for private, gated and locked repos without the token; true when it did.</summary>
    async Task<bool> Guard(SeenRequest req, NetworkStream s, string repo)
    {
        bool authorized = req.Header("authorization") == "Bearer " + Token;
        if (!Directory.Exists(Path.Combine(Root, repo)) || PrivateRepos.Contains(repo) && !authorized)
        {
            await Respond(s, 401, new() { ["X-Error-Code"] = "RepoNotFound", ["X-Error-Message"] = "Repository not found" });
            return true;
        }
        if (GatedRepos.Contains(repo) && !authorized)
        {
            await Respond(s, 403, new() { ["X-Error-Code"] = "GatedRepo", ["X-Error-Message"] = "Access to model " + repo + " is restricted." });
            return true;
        }
        if (PlainUnauthorizedRepos.Contains(repo) && !authorized)
        {
            await Respond(s, 401, new());
            return true;
        }
        return false;
    }

    string? Resolve(string repo, string rev)
    {
        if (Branches.TryGetValue(repo + "@" + rev, out var commit)) return commit;
        return rev.Length == 40 && Directory.Exists(Path.Combine(Root, repo, rev)) ? rev : null;
    }

    static async Task Respond(NetworkStream s, int status, Dictionary<string, string> headers, byte[]? body = null, bool headOnly = false)
    {
        body ??= [];
        headers["Content-Length"] = body.Length.ToString();
        await WriteHead(s, status, headers);
        if (!headOnly && body.Length > 0) await s.WriteAsync(body);
        await s.FlushAsync();
    }

    static async Task WriteHead(NetworkStream s, int status, Dictionary<string, string> headers)
    {
        var sb = new StringBuilder($"HTTP/1.1 {status} {Reason(status)}\r\nConnection: close\r\n");
        foreach (var (k, v) in headers) sb.Append(k).Append(": ").Append(v).Append("\r\n");
        sb.Append("\r\n");
        await s.WriteAsync(Encoding.ASCII.GetBytes(sb.ToString()));
    }

    static string Reason(int status) => status switch
    {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    };
}
