using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>Every REST failure answers the right status with {"error": "..."}, and the server keeps serving after it.</summary>
public sealed class RestErrorTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    HttpClient Http => server.Http;

    Task<(int, System.Text.Json.JsonElement)> Infer(string json, string model = "mnist") => Json.Post(Http, $"/v2/models/{model}/infer", json);

    [Theory]
    [InlineData("{")]
    [InlineData("not json")]
    [InlineData("[1,2,3]")]
    [InlineData("{\"inputs\": 5}")]
    [InlineData("{}")]
    [InlineData("{\"inputs\": [ { \"name\": \"Input3\", \"datatype\": \"FP32\", \"data\": [1] } ]}")]
    [InlineData("{\"id\": 7, \"inputs\": []}")]
    public async Task MalformedRequestIs400(string body)
    {
        Json.AssertError(await Infer(body), 400);
    }

    [Fact]
    public async Task DeeplyNestedJsonIs400()
    {
        var deep = new string('[', 200) + "1" + new string(']', 200);
        Json.AssertError(await Infer($$"""{"inputs":[{"name":"Input3","shape":[1],"datatype":"FP32","data":{{deep}}}]}"""), 400);
    }

    [Fact]
    public async Task WrongShapeIs400()
    {
        var msg = Json.AssertError(await Infer(Mnist.InferJson(shape: "[1,784]")), 400);
        Assert.Contains("does not match", msg);
        Json.AssertError(await Infer(Mnist.InferJson(shape: "[1,1,-28,28]")), 400);
        Json.AssertError(await Infer(Mnist.InferJson(shape: "[1099511627776,1099511627776]")), 400);
    }

    [Fact]
    public async Task WrongDatatypeIs400()
    {
        Assert.Contains("does not match the model's FP32", Json.AssertError(await Infer(Mnist.InferJson(datatype: "FP64")), 400));
        Assert.Contains("unknown datatype", Json.AssertError(await Infer(Mnist.InferJson(datatype: "FLOAT32")), 400));
        var strings = """{"inputs":[{"name":"Input3","shape":[1,1,1,2],"datatype":"FP32","data":["a","b"]}]}""";
        Json.AssertError(await Infer(strings), 400);
    }

    [Fact]
    public async Task ElementCountMismatchIs400()
    {
        var msg = Json.AssertError(await Infer(Mnist.InferJson(data: new float[783])), 400);
        Assert.Contains("783", msg);
    }

    [Fact]
    public async Task UnknownOrMissingInputIs400()
    {
        var json = Mnist.InferJson().Replace("\"Input3\"", "\"Other\"");
        Assert.Contains("unknown input", Json.AssertError(await Infer(json), 400));
        Assert.Contains("missing input", Json.AssertError(await Infer("""{"inputs": []}"""), 400));
    }

    [Fact]
    public async Task UnknownModelOrVersionIs404()
    {
        Json.AssertError(await Infer(Mnist.InferJson(), model: "nope"), 404);
        Json.AssertError(await Json.Post(Http, "/v2/models/mnist/versions/9/infer", Mnist.InferJson()), 404);
        Json.AssertError(await Json.Post(Http, "/v2/models/mnist/versions/abc/infer", Mnist.InferJson()), 404);
        Json.AssertError(await Json.Get(Http, "/v2/models/nope"), 404);
        Json.AssertError(await Json.Get(Http, "/v2/models/nope/config"), 404);
        Json.AssertError(await Json.Get(Http, "/v2/models/..%2F..%2Fetc"), 404);
        Json.AssertError(await Json.Get(Http, "/v2/no/such/route"), 404);
    }

    [Fact]
    public async Task WrongMethodIs405()
    {
        Json.AssertError(await Json.Get(Http, "/v2/models/mnist/infer"), 405);
    }

    [Fact]
    public async Task ModelThatFailedToLoadIs503()
    {
        var msg = Json.AssertError(await Infer(Mnist.InferJson(), model: "broken_config"), 503);
        Assert.Contains("NoSuchInput", msg);
        Json.AssertError(await Json.Get(Http, "/v2/models/broken_config/ready"), 503);
    }

    [Fact]
    public async Task BodyOverTheLimitIs413()
    {
        // NOTE: Content-Length is over the limit, so the server refuses before reading the body.
        var big = new byte[ServerFixture.BodyLimit + 1];
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/mnist/infer") { Content = new ByteArrayContent(big) };
        req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        HttpResponseMessage resp;
        // NOTE: a fresh client per attempt: the server closes the connection after refusing, and a pooled connection
        // it closed would fail the next request with "response ended prematurely" (a client-side race, not a server error).
        using var client = new HttpClient { BaseAddress = Http.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        try { resp = await client.SendAsync(req); }
        catch (HttpRequestException e) when (e.InnerException is IOException or SocketException)
        {
            // The server may close the connection while the client is still sending; retry once with a raw socket read.
            resp = await RawPost(big.Length);
        }
        using (resp)
        {
            Assert.Equal(413, (int)resp.StatusCode);
            var body = await resp.Content.ReadAsStringAsync();
            Assert.Contains("\"error\"", body);
        }
        // The server is still fine.
        using var after = new HttpClient { BaseAddress = Http.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        Assert.Equal(200, (await Json.Post(after, "/v2/models/mnist/infer", Mnist.InferJson())).Item1);
    }

    /// <summary>Sends only the headers of an oversized request and reads the reply.</summary>
    async Task<HttpResponseMessage> RawPost(long length)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", server.HttpPort);
        var stream = tcp.GetStream();
        var head = $"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
        var buf = new byte[4096];
        int n = await stream.ReadAsync(buf);
        var text = Encoding.ASCII.GetString(buf, 0, n);
        int code = int.Parse(text.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        return new HttpResponseMessage((System.Net.HttpStatusCode)code) { Content = new StringContent(text[(text.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..]) };
    }

    [Fact]
    public async Task BadBinaryHeaderIs400()
    {
        foreach (var value in new[] { "-1", "abc", "999999" })
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, "/v2/models/mnist/infer") { Content = new StringContent(Mnist.InferJson()) };
            req.Content.Headers.Add(RestApi.HeaderLengthName, value);
            using var resp = await Http.SendAsync(req);
            Assert.Equal(400, (int)resp.StatusCode);
        }
        // binary_data_size that runs past the body
        var header = """{"inputs":[{"name":"Input3","shape":[1,1,28,28],"datatype":"FP32","parameters":{"binary_data_size":3136}}]}""";
        using var req2 = new HttpRequestMessage(HttpMethod.Post, "/v2/models/mnist/infer") { Content = new ByteArrayContent([.. Encoding.UTF8.GetBytes(header), 1, 2, 3]) };
        req2.Content.Headers.Add(RestApi.HeaderLengthName, Encoding.UTF8.GetByteCount(header).ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var resp2 = await Http.SendAsync(req2);
        Assert.Equal(400, (int)resp2.StatusCode);
    }

    [Fact]
    public async Task LoadOfMissingOrInvalidModel()
    {
        Json.AssertError(await Json.Post(Http, "/v2/repository/models/not_there/load"), 404);
        Json.AssertError(await Json.Post(Http, "/v2/repository/models/..%2Fx/load"), 400);
        Json.AssertError(await Json.Post(Http, "/v2/repository/models/mnist/load", "{not json"), 400);
    }
}
