"""Frame display: a moderngl textured quad (framed to the window by --fit: cropped to fill it, letterboxed or
stretched; sgvis.outputs.framing), a HUD overlay, and the two
surfaces it draws on: a glfw window (fullscreen/monitor/borderless) or an offscreen EGL framebuffer (headless).

Frames arrive as uint8 [H, W, 3] on the host and go into one persistent texture (no per-frame allocation); frames
already on a CUDA device go through the CUDA->OpenGL hand-off in cuda_ops when it is available.
"""
from __future__ import annotations

import numpy as np

from sgvis.outputs.framing import check_fit, fit_rects

_VERTEX = """
#version 330
in vec2 pos;
in vec2 uv;
out vec2 v_uv;
uniform vec4 rect;     // x0, y0, x1, y1 in clip space
uniform vec4 uv_rect;  // u0, v0, u1, v1: the part of the texture shown (crop)
void main() {
    vec2 p = mix(rect.xy, rect.zw, pos * 0.5 + 0.5);
    gl_Position = vec4(p, 0.0, 1.0);
    v_uv = mix(uv_rect.xy, uv_rect.zw, uv);
}
"""
_FRAGMENT = """
#version 330
in vec2 v_uv;
out vec4 color;
uniform sampler2D tex;
void main() { color = texture(tex, v_uv); }
"""


def letterbox(frame_w: int, frame_h: int, target_w: int, target_h: int) -> tuple[int, int, int, int]:
    """Largest rectangle with the frame's aspect ratio centred in the target: (x, y, w, h) in pixels."""
    return fit_rects(frame_w, frame_h, target_w, target_h, "letterbox")[1]


class Renderer:
    """Draws the current frame (and an optional HUD image) into the bound framebuffer."""

    def __init__(self, ctx, frame_size: tuple[int, int], gpu_frames: bool = False, fit: str = "crop"):
        """`gpu_frames`: frames will arrive as CUDA tensors (RGBA texture, CUDA->GL hand-off); `fit`: how a frame
        fills a target of another aspect (crop, letterbox, stretch)."""
        import moderngl
        self.ctx = ctx
        self.fit = check_fit(fit)
        self.frame_w, self.frame_h = frame_size
        self.prog = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        # Full quad; uv's v is flipped because frames are stored top row first.
        quad = np.array([-1, -1, 0, 1, 1, -1, 1, 1, -1, 1, 0, 0, 1, 1, 1, 0], np.float32)
        self.vbo = ctx.buffer(quad.tobytes())
        self.vao = ctx.vertex_array(self.prog, [(self.vbo, "2f 2f", "pos", "uv")])
        # CUDA cannot map 3-component textures, so GPU frames use RGBA.
        self.texture = ctx.texture((self.frame_w, self.frame_h), 4 if gpu_frames else 3, dtype="f1")
        self.texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.hud_texture = None
        self.uploader = None
        if gpu_frames:
            from cuda_ops.gl_interop import GLFrameUploader
            self.uploader = GLFrameUploader(self.texture)
        self.frames_uploaded = 0

    def upload(self, frame) -> str:
        """Put a frame into the texture: a CUDA tensor through the GPU hand-off when possible, else a host copy.
        Returns the path used ('cuda-gl' or 'host')."""
        if self.uploader is not None:
            import torch
            path = self.uploader.upload(torch.as_tensor(frame))
            self.frames_uploaded += 1
            return "cuda-gl" if path.startswith("cuda") else "host"
        if hasattr(frame, "numpy"):
            frame = frame.numpy()
        self.texture.write(np.ascontiguousarray(frame))
        self.frames_uploaded += 1
        return "host"

    def set_hud(self, rgba: np.ndarray | None) -> None:
        if rgba is None:
            self.hud_texture = None
            return
        h, w = rgba.shape[:2]
        if self.hud_texture is None or self.hud_texture.size != (w, h):
            self.hud_texture = self.ctx.texture((w, h), 4, dtype="f1")
        self.hud_texture.write(np.ascontiguousarray(rgba))

    def draw(self, target_w: int, target_h: int) -> tuple[int, int, int, int]:
        """Draw the frame framed by `fit` into a target_w x target_h framebuffer (black around a letterbox);
        returns the rectangle it fills (x, y, w, h), y counted from the bottom as in OpenGL."""
        import moderngl
        self.ctx.viewport = (0, 0, target_w, target_h)
        self.ctx.clear(0.0, 0.0, 0.0, 1.0)
        (u0, v0, u1, v1), (x, y, w, h) = fit_rects(self.frame_w, self.frame_h, target_w, target_h, self.fit)
        self.prog["rect"].value = (2 * x / target_w - 1, 2 * y / target_h - 1,
                                   2 * (x + w) / target_w - 1, 2 * (y + h) / target_h - 1)
        self.prog["uv_rect"].value = (u0 / self.frame_w, v0 / self.frame_h, u1 / self.frame_w, v1 / self.frame_h)
        self.texture.use(0)
        self.vao.render(moderngl.TRIANGLE_STRIP)
        if self.hud_texture is not None:
            hw, hh = self.hud_texture.size
            self.ctx.enable(moderngl.BLEND)
            self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
            margin = 8
            self.prog["rect"].value = (2 * margin / target_w - 1, 1 - 2 * (margin + hh) / target_h,
                                       2 * (margin + hw) / target_w - 1, 1 - 2 * margin / target_h)
            self.prog["uv_rect"].value = (0.0, 0.0, 1.0, 1.0)
            self.hud_texture.use(0)
            self.vao.render(moderngl.TRIANGLE_STRIP)
            self.ctx.disable(moderngl.BLEND)
        return x, y, w, h


def hud_image(lines: list[str]) -> np.ndarray:
    """White text on a translucent dark panel, as RGBA uint8."""
    from PIL import Image, ImageDraw
    pad, line_h, char_w = 6, 14, 7
    w = pad * 2 + char_w * max((len(line) for line in lines), default=1)
    h = pad * 2 + line_h * len(lines)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 160))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill=(255, 255, 255, 255))
    return np.asarray(img)


class HeadlessSurface:
    """Offscreen rendering through EGL (no display needed)."""

    def __init__(self, size: tuple[int, int]):
        import moderngl
        try:
            self.ctx = moderngl.create_context(standalone=True, backend="egl")
        except Exception as e:
            from sgvis.errors import UserError
            raise UserError(f"headless OpenGL (EGL) is unavailable: {str(e).splitlines()[0]}; on Debian install "
                            f"libegl1 libegl-mesa0 libgl1-mesa-dri") from None
        self.size = size
        self.fbo = self.ctx.simple_framebuffer(size)
        self.fbo.use()
        self.should_close = False

    def framebuffer_size(self) -> tuple[int, int]:
        return self.size

    def begin(self) -> None:
        self.fbo.use()

    def present(self) -> None:
        self.ctx.finish()

    def read(self) -> np.ndarray:
        data = self.fbo.read(components=3)
        return np.frombuffer(data, np.uint8).reshape(self.size[1], self.size[0], 3)[::-1]

    def poll(self) -> None:
        pass

    def close(self) -> None:
        self.ctx.release()


class WindowSurface:
    """A glfw window with an OpenGL 3.3 core context."""

    def __init__(self, size: tuple[int, int], title: str = "sgvis", fullscreen: bool = False, monitor: int = 0,
                 vsync: bool = True, on_key=None):
        import glfw
        import moderngl
        from sgvis.errors import UserError
        if not glfw.init():
            raise UserError("cannot open a window: no display (set DISPLAY, or use --headless)")
        self.glfw = glfw
        monitors = glfw.get_monitors() or []
        if fullscreen and monitor >= len(monitors):
            glfw.terminate()
            raise UserError(f"--monitor {monitor} does not exist; {len(monitors)} monitor(s) connected")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
        target = monitors[monitor] if fullscreen and monitors else None
        if target is not None:
            mode = glfw.get_video_mode(target)
            size = (mode.size.width, mode.size.height)
        self.window = glfw.create_window(size[0], size[1], title, target, None)
        if not self.window:
            glfw.terminate()
            raise UserError("cannot create an OpenGL 3.3 window on this display (try --headless)")
        glfw.make_context_current(self.window)
        glfw.swap_interval(1 if vsync else 0)
        self.ctx = moderngl.create_context()
        self.monitor_index = monitor
        self.windowed_geometry = (100, 100, size[0], size[1])
        if on_key is not None:
            glfw.set_key_callback(self.window, lambda win, key, sc, action, mods:
                                  on_key(key, action) if action == glfw.PRESS else None)

    @property
    def should_close(self) -> bool:
        return bool(self.glfw.window_should_close(self.window))

    def framebuffer_size(self) -> tuple[int, int]:
        return self.glfw.get_framebuffer_size(self.window)

    def begin(self) -> None:
        self.ctx.screen.use()

    def read(self) -> np.ndarray:
        w, h = self.framebuffer_size()
        data = self.ctx.screen.read(components=3)
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1]

    def present(self) -> None:
        self.glfw.swap_buffers(self.window)

    def poll(self) -> None:
        self.glfw.poll_events()

    def toggle_fullscreen(self) -> None:
        glfw = self.glfw
        if glfw.get_window_monitor(self.window):
            x, y, w, h = self.windowed_geometry
            glfw.set_window_monitor(self.window, None, x, y, w, h, 0)
        else:
            monitors = glfw.get_monitors() or []
            if not monitors:
                return
            target = monitors[min(self.monitor_index, len(monitors) - 1)]
            x, y = glfw.get_window_pos(self.window)
            w, h = glfw.get_window_size(self.window)
            self.windowed_geometry = (x, y, w, h)
            mode = glfw.get_video_mode(target)
            glfw.set_window_monitor(self.window, target, 0, 0, mode.size.width, mode.size.height, mode.refresh_rate)

    def close(self) -> None:
        self.glfw.destroy_window(self.window)
        self.glfw.terminate()
