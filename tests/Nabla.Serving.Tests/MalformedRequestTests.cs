using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Xunit;
using Xunit.Abstractions;

namespace Nabla.Serving.Tests;

/// <summary>One generated request: path, body, content type (null: none) and Inference-Header-Content-Length (null: none).</summary>
public sealed record FuzzCase(string Kind, string Path, byte[] Body, string? ContentType, string? HeaderLength);

/// <summary>
/// Deterministic malformed inference requests for mnist (input Input3 FP32 [1,1,28,28]): case <c>i</c> depends only on
/// (seed, i), so a failure names a case that can be rebuilt alone.
/// </summary>
public static class MalformedRequests
{
    const string Infer = "/v2/models/mnist/infer";
    static readonly string Zeros = string.Join(",", Enumerable.Repeat("0", 784));
    static readonly string[] Kinds =
    [
        "garbage", "truncated", "datatype", "shape", "length", "dims", "binary-size", "header-length",
        "content-type", "structure", "nesting", "path", "long-strings", "bad-utf8", "numbers", "binary-tiling",
    ];

    static string Body(string datatype = "\"FP32\"", string shape = "[1,1,28,28]", string? data = null, string name = "\"Input3\"", string extra = "") =>
        $$"""{"inputs":[{"name":{{name}},"shape":{{shape}},"datatype":{{datatype}},"data":[{{data ?? Zeros}}]}]{{extra}}}""";

    static byte[] U(string s) => Encoding.UTF8.GetBytes(s);

    static T Pick<T>(Random r, IReadOnlyList<T> items) => items[r.Next(items.Count)];

    /// <summary>A binary-extension body: JSON header with one input of <paramref name="size"/> declared bytes, then <paramref name="tail"/> bytes.</summary>
    static (byte[] body, int jsonLength) BinaryBody(string size, int tail, Random r, string shape = "[1,1,28,28]", string datatype = "FP32")
    {
        var json = U($$$"""{"inputs":[{"name":"Input3","shape":{{{shape}}},"datatype":"{{{datatype}}}","parameters":{"binary_data_size":{{{size}}}}}]}""");
        var body = new byte[json.Length + tail];
        json.CopyTo(body, 0);
        r.NextBytes(body.AsSpan(json.Length));
        return (body, json.Length);
    }

    public static FuzzCase Make(int seed, int index)
    {
        var r = new Random(unchecked(seed * 7919 + index));
        var kind = Kinds[index % Kinds.Length];
        string path = Infer;
        string? contentType = "application/json", headerLength = null;
        byte[] body;
        switch (kind)
        {
            case "garbage":
                body = new byte[r.Next(0, 300)];
                r.NextBytes(body);
                if (body.Length > 0 && r.Next(2) == 0) body[0] = (byte)'{';
                break;
            case "truncated":
            {
                var full = U(Body());
                body = full.AsSpan(0, r.Next(0, full.Length - 1)).ToArray();
                break;
            }
            case "datatype":
                body = U(Body(datatype: Pick(r, ["\"FP64\"", "\"INT32\"", "\"BOOL\"", "\"BYTES\"", "\"FP16\"", "\"BF16\"", "\"fp32\"", "\"FP 32\"", "\"\"",
                    "\"UINT8\"", "\"STRING\"", "\"\\u00e9\"", "42", "null", "[]", "{}", "true", "\"FP32\\u0000\""])));
                break;
            case "shape":
            {
                int rank = r.Next(0, 7);
                var dims = Enumerable.Range(0, rank).Select(_ => r.Next(0, 40)).ToArray();
                long n = dims.Aggregate(1L, (a, d) => a * d);
                if (n > 4000) n = r.Next(0, 50);
                body = U(Body(shape: "[" + string.Join(",", dims) + "]", data: string.Join(",", Enumerable.Repeat("1", (int)n))));
                break;
            }
            case "length":
            {
                int n = Pick(r, [0, 1, 783, 785, 1568, r.Next(2, 700)]);
                string data = r.Next(3) switch
                {
                    0 => string.Join(",", Enumerable.Repeat("0", n)),
                    1 => "[" + string.Join(",", Enumerable.Repeat("0", n)) + "],[0]",  // ragged nesting
                    _ => string.Join(",", Enumerable.Range(0, 28).Select(i => "[" + string.Join(",", Enumerable.Repeat("0", i == 5 ? 27 : 28)) + "]")),
                };
                body = U(Body(data: data));
                break;
            }
            case "dims":
            {
                string shape = Pick(r, ["[9223372036854775807,1,28,28]", "[-9223372036854775808,1,28,28]", "[4294967296,4294967296,1,1]",
                    "[3037000500,3037000500,1,1]", "[2147483648,1,28,28]", "[-1,1,28,28]", "[1,-2,28,28]", "[1e300,1,28,28]", "[1.5,1,28,28]",
                    "[\"1\",1,28,28]", "[null,1,28,28]", "[18446744073709551615,1,28,28]", "[1,1,28,28,0]", "[65536,65536,65536,65536]",
                    "[1,1,28,28e0]", "[]", "[0]", "{}", "\"[1,1,28,28]\"", "null", "[1,1,99999999999999999999999,28]"]);
                body = U(Body(shape: shape, data: r.Next(2) == 0 ? "" : "1"));
                break;
            }
            case "binary-size":
            {
                var size = Pick(r, ["9223372036854775807", "2147483648", "4294967295", "2147483647", "-1", "1.5", "\"3136\"", "null", "3137", "3135", "0", "1e20", "-9223372036854775808"]);
                var (b, n) = BinaryBody(size, r.Next(0, 2) == 0 ? 3136 : r.Next(0, 64), r);
                body = b;
                headerLength = n.ToString(CultureInfo.InvariantCulture);
                contentType = "application/octet-stream";
                break;
            }
            case "header-length":
            {
                var (b, n) = BinaryBody("3136", 3136, r);
                body = b;
                contentType = "application/octet-stream";
                headerLength = Pick(r, ["-1", "abc", "", "99999999999999999999", "2147483648", "1e3", "+5", " 7", "0x10", "4294967296",
                    (b.Length + 1).ToString(CultureInfo.InvariantCulture), r.Next(1, n).ToString(CultureInfo.InvariantCulture),
                    (n + r.Next(1, 100)).ToString(CultureInfo.InvariantCulture), "0", "1,2", $"{n}, {n}", "-0"]);
                if (headerLength == "0")
                {
                    // Raw binary body for the single input: any length but 3136 must be refused.
                    body = new byte[Pick(r, [0, 1, 3135, 3137, 6272, r.Next(2, 5000)])];
                    r.NextBytes(body);
                }
                break;
            }
            case "content-type":
                contentType = Pick<string?>(r, ["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", null,
                    "garbage/;;;", "application/json; charset=utf-16", "application/grpc-web-nope", "*/*"]);
                body = r.Next(4) == 0 ? U(Body()) : U(Body(shape: "[1,1,28]"));
                break;
            case "structure":
                body = U(Pick(r, [
                    "[]", "42", "\"x\"", "null", "true", "{}", "{\"inputs\":{}}", "{\"inputs\":42}", "{\"inputs\":[42]}", "{\"inputs\":[null]}",
                    "{\"inputs\":[{}]}", "{\"inputs\":[{\"name\":3}]}", Body(data: "\"a\""), Body(name: "null"), Body(name: "\"NoSuchInput\""),
                    Body(data: "true,false," + Zeros.Substring(4)), Body(data: "null," + Zeros.Substring(2)), Body(data: "{}," + Zeros.Substring(2)),
                    Body(data: "\"1\"," + Zeros.Substring(2)), Body(extra: ",\"id\":5"), Body(extra: ",\"parameters\":[]"),
                    Body(extra: ",\"parameters\":{\"binary_data_output\":\"yes\"}"), Body(extra: ",\"outputs\":\"x\""), Body(extra: ",\"outputs\":[1]"),
                    Body(extra: ",\"outputs\":[{\"name\":\"nope\"}]"), Body(extra: ",\"outputs\":[{\"name\":\"Plus214_Output_0\",\"parameters\":{\"binary_data\":\"no\"}}]"),
                    Body(extra: ",\"outputs\":[{\"name\":\"Plus214_Output_0\"},{\"name\":\"Plus214_Output_0\"}]"),
                    """{"inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32","data":[0]},{"name":"Input3","shape":[1],"datatype":"FP32","data":[0]}]}""",
                    """{"inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32","data":[0],"parameters":{"binary_data_size":0}}]}""",
                    """{"inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32","parameters":7}]}""",
                    """{"inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32"}]}""",
                    """{"inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32","data":[0]}], "inputs":[]}""",
                ]));
                break;
            case "nesting":
            {
                int depth = r.Next(50, 400);
                var open = new string('[', depth);
                var close = new string(']', depth);
                body = U(r.Next(2) == 0 ? open + "0" + close : Body(data: open + "0" + close));
                break;
            }
            case "path":
                path = Pick(r, ["/v2/models/nosuch/infer", "/v2/models/mnist/versions/abc/infer", "/v2/models/mnist/versions/-1/infer",
                    "/v2/models/mnist/versions/99999999999999999999/infer", "/v2/models/mnist/versions/0/infer", "/v2/models/mnist%2F..%2Fx/infer",
                    "/v2/models/" + new string('m', 1000) + "/infer", "/v2/models/mnist/versions/7/infer", "/v2/models/%00/infer",
                    "/v2/models/mnist/versions/1.0/infer", "/v2/models/mnist/infer/extra", "/v2/models//infer"]);
                body = U(Body(shape: "[1,1,28]"));
                break;
            case "long-strings":
                body = U(r.Next(2) == 0
                    ? Body(name: "\"" + new string('x', r.Next(1000, 20000)) + "\"")
                    : Body(datatype: "\"" + new string('F', r.Next(1000, 20000)) + "\""));
                break;
            case "bad-utf8":
            {
                var prefix = U("{\"inputs\":[{\"name\":\"In");
                var suffix = U("put3\",\"shape\":[1,1,28,28],\"datatype\":\"FP32\",\"data\":[0]}]}");
                byte[] bad = Pick<byte[]>(r, [[0xC3, 0x28], [0xFF], [0xED, 0xA0, 0x80], [0xF0, 0x28, 0x8C, 0x28], [0x00], [0xE2, 0x82]]);
                body = [.. prefix, .. bad, .. suffix];
                break;
            }
            case "numbers":
            {
                var v = Pick(r, ["1e39", "-1e39", "1e400", "-1e400", "NaN", "Infinity", "\"NaN\"", "0x10", "01", "1.", ".5", "-", "1e", "340282366920938463463374607431768211456"]);
                body = U(Body(data: v + "," + Zeros.Substring(2), shape: r.Next(2) == 0 ? "[1,1,28,28]" : "[1,1,28,27]"));
                if (r.Next(2) == 0) path = "/v2/models/mnist_auto/infer";
                break;
            }
            default: // binary-tiling: the declared sizes do not tile the bytes after the header
            {
                var (b, n) = BinaryBody(Pick(r, ["3136", "3132", "12"]), Pick(r, [0, 4, 3132, 3140, 6272]), r,
                    shape: Pick(r, ["[1,1,28,28]", "[1,1,28,27]", "[3]"]), datatype: Pick(r, ["FP32", "FP64", "UINT8", "BYTES", "BOOL"]));
                if (b.Length == n + 3136 && r.Next(2) == 0) Array.Resize(ref b, b.Length - 1);
                body = b;
                headerLength = n.ToString(CultureInfo.InvariantCulture);
                contentType = "application/octet-stream";
                break;
            }
        }
        return new FuzzCase(kind, path, body, contentType, headerLength);
    }
}

/// <summary>Issue 7 item 10 (a): 10,000 malformed REST requests from a bounded pool of clients, then a good one.</summary>
[Collection("Reliability")]
public sealed class MalformedRequestTests(ServerFixture server, ITestOutputHelper output) : IClassFixture<ServerFixture>
{
    const int Seed = 20261125, Count = 10_000, Clients = 8;

    [Fact]
    public async Task TenThousandMalformedRequestsGetNo5xxAndTheServerStillServes()
    {
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = Clients, PooledConnectionLifetime = TimeSpan.FromMinutes(5) };
        using var http = new HttpClient(handler) { BaseAddress = server.Http.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        var statuses = new ConcurrentDictionary<(string Kind, int Status), int>();
        var bad = new ConcurrentQueue<string>();
        int next = -1;
        var clock = Stopwatch.StartNew();
        var deadline = TimeSpan.FromSeconds(90);
        async Task Client()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < Count && clock.Elapsed < deadline)
            {
                var c = MalformedRequests.Make(Seed, i);
                using var req = new HttpRequestMessage(HttpMethod.Post, c.Path) { Content = new ByteArrayContent(c.Body) };
                if (c.ContentType is not null) req.Content.Headers.TryAddWithoutValidation("Content-Type", c.ContentType);
                if (c.HeaderLength is not null) req.Headers.TryAddWithoutValidation(RestApi.HeaderLengthName, c.HeaderLength);
                int status;
                string text;
                try
                {
                    using var resp = await http.SendAsync(req);
                    status = (int)resp.StatusCode;
                    text = await resp.Content.ReadAsStringAsync();
                }
                catch (HttpRequestException e)
                {
                    status = -1;
                    text = e.Message;
                }
                statuses.AddOrUpdate((c.Kind, status), 1, (_, n) => n + 1);
                if (status >= 500 || status < 0) bad.Enqueue($"case {i} ({c.Kind}) {c.Path} ct={c.ContentType} ihcl={c.HeaderLength}: {status} {(text.Length <= 300 ? text : text[..300])}");
                // NOTE: a NUL in the path is refused by Kestrel itself (400, no body) before any middleware runs.
                else if (status >= 400 && !(status == 400 && c.Path.Contains("%00", StringComparison.Ordinal)) && !text.Contains("\"error\"", StringComparison.Ordinal))
                    bad.Enqueue($"case {i} ({c.Kind}) {c.Path}: {status} without an {{\"error\"}} body: {(text.Length <= 300 ? text : text[..300])}");
            }
        }
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(_ => Task.Run(Client)));
        clock.Stop();
        int sent = statuses.Values.Sum();
        output.WriteLine($"{sent} malformed requests from {Clients} clients in {clock.Elapsed.TotalSeconds:F1} s ({sent / clock.Elapsed.TotalSeconds:F0}/s)");
        foreach (var g in statuses.OrderBy(kv => kv.Key.Kind).ThenBy(kv => kv.Key.Status))
            output.WriteLine($"  {g.Key.Kind,-14} {g.Key.Status}: {g.Value}");
        Assert.True(bad.IsEmpty, $"{bad.Count} bad replies, first ones:\n{string.Join("\n", bad.Take(15))}");
        Assert.Equal(Count, sent);
        // The malformed ones are refused as client errors; the few valid ones (e.g. a good body under an odd content type) succeed.
        Assert.True(statuses.Where(kv => kv.Key.Status >= 400).Sum(kv => kv.Value) > Count * 9 / 10);

        var (status2, body) = await Json.Post(server.Http, "/v2/models/mnist/infer", Mnist.InferJson(id: "after"));
        Assert.Equal(200, status2);
        Mnist.AssertClose(Mnist.Expected, Json.Floats(body.GetProperty("outputs")[0].GetProperty("data")));
        Assert.Equal(200, (await Json.Get(server.Http, "/v2/health/ready")).Item1);
    }
}

[CollectionDefinition("Reliability")]
public sealed class ReliabilityCollection;

/// <summary>The two server bugs the fuzzing above found, pinned one by one.</summary>
public sealed class MalformedRegressionTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    [Fact]
    public async Task InvalidUtf8InsideAJsonStringIs400Not500()
    {
        byte[] body = [.. "{\"id\":\"a"u8, 0xC3, 0x28, .. "\",\"inputs\":[]}"u8];
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new("application/json");
        using var resp = await server.Http.PostAsync("/v2/models/mnist/infer", content);
        Assert.Equal(400, (int)resp.StatusCode);
        Assert.Contains("UTF-8", await resp.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task GrpcContentTypeOnTheRestPortGetsAnErrorBody()
    {
        using var content = new StringContent(Mnist.InferJson());
        content.Headers.ContentType = new("application/grpc");
        using var resp = await server.Http.PostAsync("/v2/models/mnist/infer", content);
        Assert.Equal(415, (int)resp.StatusCode);
        Assert.Contains("gRPC port", await resp.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }
}
