//! Where each part of the screen goes: a pure function of the terminal's size, shared by the
//! event loop (which pages by the list's height) and rendering.

use ratatui::layout::Rect;

/// From this width the preview goes beside the results instead of below them: below 100 columns
/// a side pane would leave neither half wide enough to read.
const SIDE_BY_SIDE_MIN_WIDTH: u16 = 100;

/// Below this body height a stacked preview would squeeze the results to nothing; it is hidden.
const STACKED_MIN_BODY: u16 = 8;

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub input: Rect,
    pub list: Rect,
    /// Includes its title row (and, side by side, its left border).
    pub preview: Option<Rect>,
    pub status: Rect,
    pub side_by_side: bool,
}

/// Splits the screen: query line at the top, status bar at the bottom, results and preview in
/// between. Computed by hand rather than with the constraint solver so that tiny sizes degrade
/// predictably (the query line is the last thing to go) and the event loop can know the list
/// height for paging without rendering.
pub fn layout(area: Rect, show_preview: bool) -> Areas {
    let h = area.height;
    let input = Rect {
        height: h.min(1),
        ..area
    };
    let status = Rect {
        y: area.y + h.saturating_sub(1),
        height: u16::from(h >= 2),
        ..area
    };
    let body = Rect {
        y: area.y + h.min(1),
        height: h.saturating_sub(2),
        ..area
    };
    let mut areas = Areas {
        input,
        list: body,
        preview: None,
        status,
        side_by_side: false,
    };
    if !show_preview || body.height == 0 || body.width == 0 {
        return areas;
    }
    if area.width >= SIDE_BY_SIDE_MIN_WIDTH {
        let list_w = body.width * 2 / 5;
        areas.list.width = list_w;
        areas.preview = Some(Rect {
            x: body.x + list_w,
            width: body.width - list_w,
            ..body
        });
        areas.side_by_side = true;
    } else if body.height >= STACKED_MIN_BODY {
        let list_h = (body.height * 2 / 5).max(3);
        areas.list.height = list_h;
        areas.preview = Some(Rect {
            y: body.y + list_h,
            height: body.height - list_h,
            ..body
        });
    }
    areas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_80x24_stacks_and_120x40_goes_side_by_side() {
        let a = layout(Rect::new(0, 0, 80, 24), true);
        assert!(!a.side_by_side);
        assert_eq!(a.input, Rect::new(0, 0, 80, 1));
        assert_eq!(a.status, Rect::new(0, 23, 80, 1));
        let p = a.preview.unwrap();
        assert_eq!(a.list.y, 1);
        assert_eq!(p.y, a.list.bottom());
        assert_eq!(p.bottom(), 23);
        assert!(a.list.height >= 5);

        let a = layout(Rect::new(0, 0, 120, 40), true);
        assert!(a.side_by_side);
        let p = a.preview.unwrap();
        assert_eq!(p.x, a.list.right());
        assert_eq!(p.right(), 120);
        assert_eq!(a.list.height, 38);

        let a = layout(Rect::new(0, 0, 80, 24), false);
        assert_eq!((a.preview, a.list.height), (None, 22));
    }

    #[test]
    fn layout_degrades_at_tiny_sizes() {
        for (w, h) in [(1, 1), (10, 3), (0, 0), (5, 2), (80, 9), (200, 1)] {
            let a = layout(Rect::new(0, 0, w, h), true);
            for r in [a.input, a.list, a.status].into_iter().chain(a.preview) {
                assert!(r.bottom() <= h && r.right() <= w, "{w}x{h}: {r:?}");
            }
        }
    }
}
