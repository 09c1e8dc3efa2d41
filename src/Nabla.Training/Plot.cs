using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;

namespace Nabla.Training;

/// <summary>
/// Draws the training curves to a PNG with no imaging dependency: one panel per metric family (loss, accuracy),
/// one coloured polyline per metric over epochs, axes, and the y-range printed with a small built-in digit font.
/// </summary>
public static class TrainingPlot
{
    static readonly (byte r, byte g, byte b)[] Palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)];

    public static void Write(string path, IReadOnlyList<Dictionary<string, double>> history, int width = 640, int height = 480)
    {
        var img = new Image(width, height);
        img.Fill(255, 255, 255);
        var keys = history.SelectMany(h => h.Keys).Distinct().Where(k => k != "epoch" && !k.StartsWith("lr", StringComparison.Ordinal)).ToList();
        var panels = new[] { keys.Where(k => k.Contains("loss")).ToList(), keys.Where(k => !k.Contains("loss")).ToList() }.Where(p => p.Count > 0).ToList();
        int ph = panels.Count == 0 ? height : height / panels.Count;
        for (int pi = 0; pi < panels.Count; pi++)
            DrawPanel(img, panels[pi], history, 40, pi * ph + 10, width - 60, ph - 30, pi * 3);
        var tmp = path + ".tmp";
        File.WriteAllBytes(tmp, img.EncodePng());
        File.Move(tmp, path, overwrite: true);
    }

    static void DrawPanel(Image img, List<string> keys, IReadOnlyList<Dictionary<string, double>> history, int x0, int y0, int w, int h, int colorOffset)
    {
        var values = keys.SelectMany(k => history.Where(e => e.ContainsKey(k)).Select(e => e[k])).Where(double.IsFinite).ToList();
        if (values.Count == 0) return;
        double lo = values.Min(), hi = values.Max();
        if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
        img.Line(x0, y0, x0, y0 + h, 0, 0, 0);
        img.Line(x0, y0 + h, x0 + w, y0 + h, 0, 0, 0);
        img.Text(2, y0, hi.ToString("0.000", CultureInfo.InvariantCulture));
        img.Text(2, y0 + h - 5, lo.ToString("0.000", CultureInfo.InvariantCulture));
        int n = history.Count;
        for (int ki = 0; ki < keys.Count; ki++)
        {
            var c = Palette[(ki + colorOffset) % Palette.Length];
            int? px = null, py = null;
            for (int e = 0; e < n; e++)
            {
                if (!history[e].TryGetValue(keys[ki], out var v) || !double.IsFinite(v)) continue;
                int x = x0 + (n == 1 ? w / 2 : (int)((long)e * w / (n - 1)));
                int y = y0 + h - (int)((v - lo) / (hi - lo) * h);
                if (px is int ox && py is int oy) img.Line(ox, oy, x, y, c.r, c.g, c.b);
                img.Rect(x - 2, y - 2, 5, 5, c.r, c.g, c.b);
                px = x;
                py = y;
            }
            // Legend: a swatch and the metric's name per curve, top right.
            int ly = y0 + 2 + 9 * ki, lx = x0 + w - 4 * 14 - 10;
            img.Rect(lx, ly, 6, 6, c.r, c.g, c.b);
            img.Text(lx + 9, ly, keys[ki]);
        }
    }

    sealed class Image(int width, int height)
    {
        readonly byte[] px = new byte[width * height * 3];

        public void Fill(byte r, byte g, byte b)
        {
            for (int i = 0; i < px.Length; i += 3) { px[i] = r; px[i + 1] = g; px[i + 2] = b; }
        }

        public void Set(int x, int y, byte r, byte g, byte b)
        {
            if ((uint)x >= (uint)width || (uint)y >= (uint)height) return;
            int i = (y * width + x) * 3;
            px[i] = r; px[i + 1] = g; px[i + 2] = b;
        }

        public void Rect(int x, int y, int w, int h, byte r, byte g, byte b)
        {
            for (int j = 0; j < h; j++) for (int i = 0; i < w; i++) Set(x + i, y + j, r, g, b);
        }

        public void Line(int x0, int y0, int x1, int y1, byte r, byte g, byte b)
        {
            int dx = Math.Abs(x1 - x0), dy = -Math.Abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
            while (true)
            {
                Set(x0, y0, r, g, b);
                Set(x0, y0 + 1, r, g, b);
                if (x0 == x1 && y0 == y1) break;
                int e2 = 2 * err;
                if (e2 >= dy) { err += dy; x0 += sx; }
                if (e2 <= dx) { err += dx; y0 += sy; }
            }
        }

        // 3×5 glyphs for digits, '.', and '-', one row per 3 bits.
        static readonly Dictionary<char, int[]> Glyphs = new()
        {
            ['0'] = [7, 5, 5, 5, 7], ['1'] = [2, 6, 2, 2, 7], ['2'] = [7, 1, 7, 4, 7], ['3'] = [7, 1, 7, 1, 7], ['4'] = [5, 5, 7, 1, 1],
            ['5'] = [7, 4, 7, 1, 7], ['6'] = [7, 4, 7, 5, 7], ['7'] = [7, 1, 1, 1, 1], ['8'] = [7, 5, 7, 5, 7], ['9'] = [7, 5, 7, 1, 7],
            ['.'] = [0, 0, 0, 0, 2], ['-'] = [0, 0, 7, 0, 0], ['_'] = [0, 0, 0, 0, 7], [' '] = [0, 0, 0, 0, 0],
            ['A'] = [2, 5, 7, 5, 5], ['B'] = [6, 5, 6, 5, 6], ['C'] = [3, 4, 4, 4, 3], ['D'] = [6, 5, 5, 5, 6], ['E'] = [7, 4, 6, 4, 7],
            ['F'] = [7, 4, 6, 4, 4], ['G'] = [3, 4, 5, 5, 3], ['H'] = [5, 5, 7, 5, 5], ['I'] = [7, 2, 2, 2, 7], ['J'] = [1, 1, 1, 5, 2],
            ['K'] = [5, 5, 6, 5, 5], ['L'] = [4, 4, 4, 4, 7], ['M'] = [5, 7, 7, 5, 5], ['N'] = [6, 5, 5, 5, 5], ['O'] = [2, 5, 5, 5, 2],
            ['P'] = [6, 5, 6, 4, 4], ['Q'] = [2, 5, 5, 6, 3], ['R'] = [6, 5, 6, 5, 5], ['S'] = [3, 4, 2, 1, 6], ['T'] = [7, 2, 2, 2, 2],
            ['U'] = [5, 5, 5, 5, 7], ['V'] = [5, 5, 5, 5, 2], ['W'] = [5, 5, 7, 7, 5], ['X'] = [5, 5, 2, 5, 5], ['Y'] = [5, 5, 2, 2, 2],
            ['Z'] = [7, 1, 2, 4, 7],
        };

        public void Text(int x, int y, string s)
        {
            foreach (var ch in s.ToUpperInvariant())
            {
                if (Glyphs.TryGetValue(ch, out var rows))
                    for (int j = 0; j < 5; j++)
                        for (int i = 0; i < 3; i++)
                            if ((rows[j] >> (2 - i) & 1) != 0) Set(x + i, y + j, 0, 0, 0);
                x += 4;
            }
        }

        public byte[] EncodePng()
        {
            var raw = new byte[(width * 3 + 1) * height];
            for (int y = 0; y < height; y++) Buffer.BlockCopy(px, y * width * 3, raw, y * (width * 3 + 1) + 1, width * 3);
            var z = new MemoryStream();
            using (var zs = new ZLibStream(z, CompressionLevel.Optimal, leaveOpen: true)) zs.Write(raw);
            var ms = new MemoryStream();
            ms.Write([137, 80, 78, 71, 13, 10, 26, 10]);
            var ihdr = new byte[13];
            BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
            BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
            ihdr[8] = 8; ihdr[9] = 2;
            Chunk(ms, "IHDR", ihdr);
            Chunk(ms, "IDAT", z.ToArray());
            Chunk(ms, "IEND", []);
            return ms.ToArray();
        }

        static void Chunk(Stream s, string type, byte[] data)
        {
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
            s.Write(len);
            var td = new byte[4 + data.Length];
            System.Text.Encoding.ASCII.GetBytes(type, td);
            data.CopyTo(td, 4);
            s.Write(td);
            BinaryPrimitives.WriteUInt32BigEndian(len, Crc32(td));
            s.Write(len);
        }

        static uint Crc32(byte[] data)
        {
            uint c = 0xFFFFFFFF;
            foreach (var b in data)
            {
                c ^= b;
                for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
            }
            return c ^ 0xFFFFFFFF;
        }
    }
}
