//! Read-only queries: one resource, one hold, and a page of a partition's resources in id order.
//! Queries never change state; the caller ticks the engine first so expired holds show as such.

use std::ops::Bound;

use crate::error::Refusal;
use crate::limits::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
use crate::name::{check_name, check_prefix};
use crate::state::Engine;
use crate::view::{HoldView, ResourcePage, ResourceView};

/// A listing request: resources whose id starts with `prefix`, after `after` (exclusive), at
/// most `limit` (default 100, 1–1 000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    pub after: Option<String>,
    pub limit: Option<u64>,
}

impl ListQuery {
    fn validate(&self) -> Result<usize, Refusal> {
        check_prefix("prefix", &self.prefix)?;
        if let Some(after) = &self.after {
            check_name("after", after)?;
        }
        match self.limit {
            None => Ok(LIST_LIMIT_DEFAULT),
            Some(limit) if (1..=LIST_LIMIT_MAX as u64).contains(&limit) => Ok(limit as usize),
            Some(_) => Err(Refusal::invalid(
                "limit",
                concat!("must be between 1 and ", crate::limits::list_limit_max!()),
            )),
        }
    }
}

impl Engine {
    /// The resource `id` of `partition`, or `resource_not_found`.
    pub fn resource(&self, partition: &str, id: &str) -> Result<ResourceView, Refusal> {
        check_name("partition", partition)?;
        check_name("id", id)?;
        let not_found = || Refusal::ResourceNotFound { resource: id.into() };
        let partition = self.find_partition(partition).ok_or_else(not_found)?;
        let index = self.partitions[partition as usize]
            .find_resource(&self.key(id))
            .ok_or_else(not_found)?;
        Ok(self.resource_view(partition, index))
    }

    /// The hold `id` of `partition`, or `hold_not_found`.
    pub fn hold(&self, partition: &str, id: &str) -> Result<HoldView, Refusal> {
        check_name("partition", partition)?;
        check_name("id", id)?;
        let slot = self.find_hold(partition, id)?;
        Ok(self.hold_view(slot))
    }

    /// A page of `partition`'s resources in id byte order. A partition without resources
    /// lists as empty.
    pub fn list_resources(
        &self,
        partition: &str,
        query: &ListQuery,
    ) -> Result<ResourcePage, Refusal> {
        check_name("partition", partition)?;
        let limit = query.validate()?;
        let Some(index) = self.find_partition(partition) else {
            return Ok(ResourcePage { resources: Vec::new(), next: None });
        };
        let part = &self.partitions[index as usize];
        let prefix = query.prefix.as_str();
        let start = match query.after.as_deref() {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut matching = part
            .resource_order
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(id, _)| id.starts_with(prefix));
        let resources: Vec<ResourceView> = matching
            .by_ref()
            .take(limit)
            .map(|(_, &resource)| self.resource_view(index, resource))
            .collect();
        let more = matching.next().is_some();
        let next = if more { resources.last().map(|last| last.id.clone()) } else { None };
        Ok(ResourcePage { resources, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn ids(page: &ResourcePage) -> Vec<&str> {
        page.resources.iter().map(|r| &*r.id).collect()
    }

    fn engine_with_seats() -> Engine {
        let mut engine = Engine::default();
        for id in ["b-2", "a-1", "b-1", "c", "b-10", "a-2"] {
            engine.apply(T0, &put("p", id, 1)).unwrap();
        }
        engine.apply(T0, &put("other", "a-0", 1)).unwrap();
        engine
    }

    #[test]
    fn lists_in_byte_order_with_paging() {
        let engine = engine_with_seats();
        let first = engine
            .list_resources("p", &ListQuery { limit: Some(4), ..ListQuery::default() })
            .unwrap();
        assert_eq!(ids(&first), ["a-1", "a-2", "b-1", "b-10"]);
        assert_eq!(first.next.as_deref(), Some("b-10"));
        let second = engine
            .list_resources(
                "p",
                &ListQuery {
                    after: first.next.map(|n| n.to_string()),
                    limit: Some(4),
                    ..ListQuery::default()
                },
            )
            .unwrap();
        assert_eq!(ids(&second), ["b-2", "c"]);
        assert_eq!(second.next, None);
    }

    #[test]
    fn next_is_null_when_the_page_ends_exactly() {
        let engine = engine_with_seats();
        let query = ListQuery { prefix: "a-".into(), limit: Some(2), ..ListQuery::default() };
        let page = engine.list_resources("p", &query).unwrap();
        assert_eq!(ids(&page), ["a-1", "a-2"]);
        assert_eq!(page.next, None);
    }

    #[test]
    fn prefix_and_after_combine() {
        let engine = engine_with_seats();
        let query = ListQuery { prefix: "b-".into(), after: Some("a-9".into()), limit: None };
        assert_eq!(ids(&engine.list_resources("p", &query).unwrap()), ["b-1", "b-10", "b-2"]);
        let query = ListQuery { prefix: "b-".into(), after: Some("b-1".into()), limit: Some(1) };
        let page = engine.list_resources("p", &query).unwrap();
        assert_eq!(ids(&page), ["b-10"]);
        assert_eq!(page.next.as_deref(), Some("b-10"));
        let query = ListQuery { prefix: "b-".into(), after: Some("zzz".into()), limit: None };
        assert!(engine.list_resources("p", &query).unwrap().resources.is_empty());
    }

    #[test]
    fn unknown_partition_lists_empty_and_bad_input_is_invalid() {
        let engine = engine_with_seats();
        let page = engine.list_resources("none", &ListQuery::default()).unwrap();
        assert!(page.resources.is_empty() && page.next.is_none());
        for (query, field) in [
            (ListQuery { limit: Some(0), ..ListQuery::default() }, "limit"),
            (ListQuery { limit: Some(1001), ..ListQuery::default() }, "limit"),
            (ListQuery { prefix: "a b".into(), ..ListQuery::default() }, "prefix"),
            (ListQuery { after: Some(String::new()), ..ListQuery::default() }, "after"),
        ] {
            match engine.list_resources("p", &query).unwrap_err() {
                Refusal::Invalid { field: named, .. } => assert_eq!(named, field),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            engine.list_resources("p q", &ListQuery::default()).unwrap_err().code(),
            "invalid"
        );
    }

    #[test]
    fn get_resource_and_hold() {
        let mut engine = engine_with(5);
        assert_eq!(engine.resource("p", "r").unwrap().available(), 5);
        assert_eq!(
            engine.resource("p", "x").unwrap_err(),
            Refusal::ResourceNotFound { resource: "x".into() }
        );
        assert_eq!(engine.resource("zz", "r").unwrap_err().code(), "resource_not_found");
        assert_eq!(engine.hold("p", "h").unwrap_err(), Refusal::HoldNotFound);
        engine.apply(T0, &hold("p", "h", &[("r", 2)], None)).unwrap();
        assert_eq!(&*engine.hold("p", "h").unwrap().id, "h");
        assert_eq!(engine.hold("p", "h h").unwrap_err().code(), "invalid");
    }
}
