using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>TLS through Kestrel's certificate support: a self-signed certificate made here, HTTPS and gRPC over TLS.</summary>
public sealed class TlsFixture : ServerFixture, IDisposable
{
    public string CertPath { get; } = Path.Combine(Path.GetTempPath(), "nabla-tls-" + Guid.NewGuid().ToString("N") + ".pfx");
    public X509Certificate2 Certificate { get; }

    public TlsFixture()
    {
        using var key = RSA.Create(2048);
        var req = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        req.CertificateExtensions.Add(san.Build());
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        File.WriteAllBytes(CertPath, cert.Export(X509ContentType.Pfx, "test-password"));
        Certificate = X509CertificateLoader.LoadCertificate(cert.Export(X509ContentType.Cert));
    }

    public void Dispose() => File.Delete(CertPath);

    protected override void Configure(ServingOptions options)
    {
        options.TlsCertificatePath = CertPath;
        options.TlsCertificatePassword = "test-password";
    }
}

public class TlsTests(TlsFixture server) : IClassFixture<TlsFixture>
{
    HttpClientHandler TrustingOurCertificate() => new()
    {
        // Trust exactly the certificate the fixture made, nothing else.
        ServerCertificateCustomValidationCallback = (_, cert, _, _) => cert is not null && cert.Thumbprint == server.Certificate.Thumbprint,
    };

    [Fact]
    public async Task RestAnswersOverHttps()
    {
        using var http = new HttpClient(TrustingOurCertificate()) { BaseAddress = new Uri($"https://127.0.0.1:{server.HttpPort}"), Timeout = TimeSpan.FromSeconds(30) };
        var (status, body) = await Json.Get(http, "/v2/health/live");
        Assert.Equal(200, status);
        Assert.True(body.GetProperty("live").GetBoolean());
    }

    [Fact]
    public async Task PlainHttpOnTheTlsPortFailsAndAnUntrustedCertificateIsRejected()
    {
        using var plain = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{server.HttpPort}"), Timeout = TimeSpan.FromSeconds(10) };
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.GetAsync("/v2/health/live"));
        using var strict = new HttpClient { BaseAddress = new Uri($"https://127.0.0.1:{server.HttpPort}"), Timeout = TimeSpan.FromSeconds(10) };
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => strict.GetAsync("/v2/health/live"));
    }

    [Fact]
    public async Task GrpcWorksOverTls()
    {
        using var channel = GrpcChannel.ForAddress($"https://127.0.0.1:{server.GrpcPort}", new GrpcChannelOptions { HttpHandler = TrustingOurCertificate() });
        var client = new Nabla.Serving.Grpc.GRPCInferenceService.GRPCInferenceServiceClient(channel);
        var live = await client.ServerLiveAsync(new Nabla.Serving.Grpc.ServerLiveRequest(), deadline: DateTime.UtcNow.AddSeconds(30));
        Assert.True(live.Live);
    }
}
