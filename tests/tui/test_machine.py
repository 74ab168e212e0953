"""Machine: the fingerprint and live gauges; missing GPUs and figures are n/a."""

from __future__ import annotations

from conftest import FixedProbe, screen_text, wait_for


async def test_machine_shows_fingerprint_and_gauges_without_gpu(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: "62%" in screen_text(app))
        text = screen_text(app)
        assert "5eed5eed5eed5eed" in text and "Test CPU @ 3.00GHz" in text and "lab-box" in text
        assert "40% (2 CPUs)" in text and "18%" in text and "2.00 GiB / 8.00 GiB" in text
        assert "256.00 MiB / 2.00 GiB" in text and "load 0.52  0.61  0.70" in text
        assert "n/a: no NVIDIA GPU visible (NVML not available: test machine)" in text
        # GPUs field of the fingerprint: unknown, so n/a (never 0)
        assert any(line.split()[:1] == ["GPUs"] and "n/a" in line for line in text.splitlines())


async def test_machine_shows_gpu_gauges_when_present(make_app) -> None:
    app = make_app(gpu=True)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: "Test GPU 24GB" in screen_text(app) and "37%" in screen_text(app))
        text = screen_text(app)
        assert "6.00 GiB / 24.00 GiB" in text and "112.5 / 350.0 W" in text and "temperature 54 °C" in text


async def test_polls_never_overlap_and_stop_off_screen(make_app) -> None:
    probe = FixedProbe()
    app = make_app(probe=probe, poll_interval=0.05)
    async with app.run_test(size=(120, 36)) as pilot:
        assert probe.reads == 0  # nothing polled before the screen is shown
        await pilot.press("4")
        await wait_for(pilot, lambda: probe.reads >= 3)
        assert len([w for w in app.workers if w.group == "poll" and w.is_running]) <= 1
        await pilot.press("1")
        await pilot.pause(0.2)
        reads = probe.reads
        await pilot.pause(0.3)
        assert probe.reads == reads  # no polling while the screen is not shown
