using System.Runtime.Intrinsics.X86;
using Xunit;

namespace Nabla.Tests;

/// <summary>
/// <see cref="Cpu.SplitRow4"/> and <see cref="Cpu.MergeRow4"/> (AVX-512) against their definitions, element by element:
/// every position, the padding's zeros, and no write past what each may touch (sentinels after the allowed junk).
/// </summary>
public class ResidueRowTests
{
    const float Sentinel = -12345f;

    public static TheoryData<int, int, int> SplitCases() => new()
    {
        // w, pad, n
        { 56, 1, 15 },    // ResNet-18's 56×56 layers: one block, the padding at both ends
        { 28, 1, 8 },     // the 28×28 layers: half a block
        { 101, 1, 26 },   // two blocks, a ragged end
        { 5, 1, 2 },      // a row shorter than one vector
        { 64, 0, 16 },    // no padding, exactly one block
        { 70, 3, 40 },    // three blocks, wider padding
        { 200, 1, 16 },   // n ends inside the row: the rest of the row is not read into any residue
    };

    [Theory]
    [MemberData(nameof(SplitCases))]
    public unsafe void SplitRow4TakesEveryFourthColumnOfThePaddedRow(int w, int pad, int n)
    {
        if (!Avx512F.IsSupported)
        {
            // Without AVX-512 the helpers must never run: their switch is off, and Winograd keeps its 2-way passes.
            Assert.False(Cpu.UseRow4);
            return;
        }
        var x = new float[w];
        for (int i = 0; i < w; i++) x[i] = i + 1;   // no zeros in the row, so a padding zero is told apart
        foreach (bool nullRow in new[] { false, true })
        {
            int room = n + 15;   // n positions and the allowed junk
            var r = new float[4][];
            for (int q = 0; q < 4; q++) { r[q] = new float[room + 8]; Array.Fill(r[q], Sentinel); }
            fixed (float* px = x, p0 = r[0], p1 = r[1], p2 = r[2], p3 = r[3])
                Cpu.SplitRow4(nullRow ? null : px, w, pad, p0, p1, p2, p3, n);
            for (int q = 0; q < 4; q++)
            {
                for (int j = 0; j < n; j++)
                {
                    int col = 4 * j + q - pad;
                    float expected = !nullRow && col >= 0 && col < w ? x[col] : 0f;
                    Assert.True(expected == r[q][j], $"w {w} pad {pad} n {n} null {nullRow}: residue {q} position {j} is {r[q][j]}, expected {expected}");
                }
                for (int j = room; j < r[q].Length; j++)
                    Assert.True(r[q][j] == Sentinel, $"w {w} pad {pad} n {n}: residue {q} written at {j}, past the allowed {room}");
            }
        }
    }

    [Theory]
    [InlineData(56, 15)]
    [InlineData(28, 8)]
    [InlineData(29, 9)]
    [InlineData(101, 26)]
    [InlineData(64, 17)]
    [InlineData(3, 8)]
    public unsafe void MergeRow4WritesExactlyTheRow(int w, int s)
    {
        if (!Avx512F.IsSupported)
        {
            Assert.False(Cpu.UseRow4);
            return;
        }
        // Residue rows of s positions with room for whole blocks of 16 to be read past them (as the caller's planes have).
        int readable = (s + 15) / 16 * 16 + 16;
        var r = new float[4][];
        for (int q = 0; q < 4; q++)
        {
            r[q] = new float[readable];
            for (int j = 0; j < readable; j++) r[q][j] = j < s ? 1000 * q + j : float.NaN;
        }
        var dst = new float[w + 40];
        Array.Fill(dst, Sentinel);
        fixed (float* p0 = r[0], p1 = r[1], p2 = r[2], p3 = r[3], pd = dst)
            Cpu.MergeRow4(p0, p1, p2, p3, pd, w);
        for (int i = 0; i < w; i++)
            Assert.True(dst[i] == r[i % 4][i / 4], $"w {w}: position {i} is {dst[i]}, expected {r[i % 4][i / 4]}");
        for (int i = w; i < dst.Length; i++)
            Assert.True(dst[i] == Sentinel, $"w {w}: written at {i}, past the row's {w} positions");
    }
}
