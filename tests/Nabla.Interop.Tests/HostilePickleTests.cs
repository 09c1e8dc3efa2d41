using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>Pickles that run a command under Python's pickle.load: refused by name, with no side effect.</summary>
public class HostilePickleTests
{
    [Theory]
    [InlineData("hostile_posix_system.pt", "posix.system", "nabla_pwned_posix_system")]
    [InlineData("hostile_os_system.pt", "os.system", "nabla_pwned_os_system")]
    [InlineData("hostile_eval.pt", "builtins.eval", "nabla_pwned_eval")]
    [InlineData("hostile_subprocess.pt", "subprocess.Popen", "nabla_pwned_subprocess")]
    [InlineData("hostile_stack_global.pt", "os.system", "nabla_pwned_stack_global")]
    [InlineData("hostile_legacy_system.pt", "posix.system", "nabla_pwned_legacy")]
    public void GlobalIsRefusedByNameAndNothingRuns(string file, string global, string marker)
    {
        var path = Fixtures.Generated(file);
        foreach (var dir in MarkerDirs(path)) File.Delete(Path.Combine(dir, marker));

        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.Load(path));
        Assert.Contains($"'{global}'", e.Message);
        Assert.Contains(file, e.Message);
        Assert.Contains("not allowed", e.Message);
        var e2 = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.LoadStateDict(path));
        Assert.Contains(global, e2.Message);

        foreach (var dir in MarkerDirs(path))
            Assert.False(File.Exists(Path.Combine(dir, marker)), $"the pickle's command ran: {Path.Combine(dir, marker)} exists");
    }

    [Fact]
    public void InstOpcodeIsRefused()
    {
        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.Load(Fixtures.Generated("hostile_inst.pt")));
        Assert.Contains("INST", e.Message);
        foreach (var dir in MarkerDirs(Fixtures.Generated("hostile_inst.pt")))
            Assert.False(File.Exists(Path.Combine(dir, "nabla_pwned_inst")));
    }

    [Fact]
    public void ConvertRefusesHostileInputAndWritesNothing()
    {
        using var tmp = new Fixtures.TempDir();
        var output = tmp.File("out.safetensors");
        var e = Assert.Throws<ModelFormatException>(() => CheckpointFiles.Convert(Fixtures.Generated("hostile_eval.pt"), output));
        Assert.Contains("builtins.eval", e.Message);
        Assert.False(File.Exists(output));
    }

    static IEnumerable<string> MarkerDirs(string fixture) =>
        [Environment.CurrentDirectory, AppContext.BaseDirectory, Path.GetDirectoryName(fixture)!, Path.GetTempPath()];
}
